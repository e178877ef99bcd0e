"""Classifier-free guidance, dynamic thresholding, and the guided denoiser built from a raw model function.

We guide in x0 space (our choice). The conversion from any of eps / x0 / v to x0 is affine in the prediction,
with coefficients that depend only on `(z, logsnr)`; both halves of the guided batch share them, so guiding in
eps, v or x0 space gives the same x0 (tests/diffusion/test_guidance.py checks this).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from lumiere_jax.diffusion import parameterization as param_lib
from lumiere_jax.diffusion import samplers

ModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


def classifier_free_guidance(conditional: jax.Array, unconditional: jax.Array, weight: float) -> jax.Array:
    """`unconditional + weight * (conditional - unconditional)`: weight 1 is conditional, 0 unconditional."""
    return unconditional + weight * (conditional - unconditional)


def dynamic_threshold(x0: jax.Array, percentile: float = 99.5) -> jax.Array:
    """Imagen's dynamic thresholding of a predicted `x0: [B, ...]`.

    Per example, `s = max(percentile_p(|x0|) over all non-batch dims, 1)`; returns `clip(x0, -s, s) / s`.
    Data already inside [-1, 1] with `s = 1` is unchanged. Percentiles use linear interpolation (as NumPy).
    """
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile={percentile} must lie in [0, 100] (Imagen uses 99.5)")
    flat = jnp.abs(x0.reshape(x0.shape[0], -1)).astype(jnp.float32)
    scale = jnp.maximum(jnp.percentile(flat, percentile, axis=1), 1.0)
    scale = param_lib.broadcast_to_rank(scale, x0.ndim).astype(x0.dtype)
    return jnp.clip(x0, -scale, scale) / scale


def thresholded(denoise_fn: samplers.Denoiser, percentile: float | None) -> samplers.Denoiser:
    """`denoise_fn` followed by dynamic thresholding of its whole x0 prediction (None: unchanged)."""
    if percentile is None:
        return denoise_fn
    return lambda z, logsnr: dynamic_threshold(denoise_fn(z, logsnr), percentile)


def _concat_batch(first: Any, second: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=0), first, second)


def guided_denoiser(
    model_fn: ModelFn,
    cond: Any,
    null_cond: Any,
    guidance_weight: float,
    parameterization: str = "v",
    threshold_percentile: float | None = 99.5,
) -> samplers.Denoiser:
    """Builds `denoise_fn(z, logsnr) -> x0_hat` from `model_fn(z, logsnr, cond) -> raw prediction`.

    `cond` and `null_cond` are pytrees with batch dim B (e.g. text embeddings and mask, low-res video); the
    null one carries the dropped condition (zero embeddings, all-False mask) and anything shared (low-res).
    Conditional and unconditional run as ONE batch of 2B. Predictions are converted to x0, guided, and then
    dynamically thresholded (skip with `threshold_percentile=None`). A Python `guidance_weight` of 1 skips the
    unconditional half entirely; an array weight (e.g. traced) always runs both halves.
    """
    param_lib.check_parameterization(parameterization)

    def threshold(x0_hat):
        return x0_hat if threshold_percentile is None else dynamic_threshold(x0_hat, threshold_percentile)

    def denoise_fn(z: jax.Array, logsnr: jax.Array) -> jax.Array:
        if isinstance(guidance_weight, (int, float)) and guidance_weight == 1.0:
            return threshold(param_lib.to_x0(model_fn(z, logsnr, cond), z, logsnr, parameterization))
        z_both = jnp.concatenate([z, z], axis=0)
        logsnr_both = jnp.concatenate([logsnr, logsnr], axis=0)
        prediction = model_fn(z_both, logsnr_both, _concat_batch(cond, null_cond))
        x0_both = param_lib.to_x0(prediction, z_both, logsnr_both, parameterization)
        x0_cond, x0_uncond = jnp.split(x0_both, 2, axis=0)
        return threshold(classifier_free_guidance(x0_cond, x0_uncond, guidance_weight))

    return denoise_fn
