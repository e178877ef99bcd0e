"""How close an upsampled clip comes to the full-size ground truth: PSNR, and the bilinear baseline.

The demo's SSR check (lumiere_jax/demo.py): a ground-truth clip is area-downsampled to the base size, as the SSR's
training inputs are (`stages.adapter.area_downsample`), then brought back to full size by the SSR and by
bilinear interpolation of the same input; the SSR should come closer (higher PSNR).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lumiere_jax.stages import adapter as adapter_lib


def psnr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two clips in [-1, 1] (peak-to-peak 2): `10 log10(2^2 / MSE)`."""
    estimate, reference = np.asarray(estimate, np.float64), np.asarray(reference, np.float64)
    if estimate.shape != reference.shape:
        raise ValueError(f"PSNR needs equal shapes, got {estimate.shape} and {reference.shape}")
    mse = float(np.mean((estimate - reference) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(4.0 / mse))


def area_downsample(video: np.ndarray, size: int) -> np.ndarray:
    """`video: [..., H, W, 3]` in [-1, 1] -> `[..., size, size, 3]`, as the SSR's training inputs are made."""
    return np.asarray(adapter_lib.area_downsample(jnp.asarray(video, jnp.float32), size))


def bilinear_upsample(video: np.ndarray, size: int) -> np.ndarray:
    """`video: [..., h, w, 3]` -> `[..., size, size, 3]` by bilinear interpolation (pixel centres aligned, edges
    clamped)."""
    video = jnp.asarray(video, jnp.float32)
    return np.asarray(jax.image.resize(video, (*video.shape[:-3], size, size, video.shape[-1]), "linear"))

