"""Preview videos during training (not the sampling job, `lumiere_jax.sample`): EMA weights, classifier-free
guidance, a few DDIM steps, written as filmstrips to TensorBoard and as videos under MODEL_DIR/samples/."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lumiere_jax import storage
from lumiere_jax.data import video_io
from lumiere_jax.diffusion import augmentation
from lumiere_jax.diffusion import guidance
from lumiere_jax.diffusion import samplers
from lumiere_jax.stages import adapter as adapter_lib
from lumiere_jax.stages import text as text_lib
from lumiere_jax.stages.diffusion_config import DiffusionConfig


def generate(
    params: Any,
    batch: dict,
    text_encoder_params: Any,
    rng: jax.Array,
    *,
    adapter: adapter_lib.ModelAdapter,
    config: DiffusionConfig,
    num_steps: int,
    guidance_weight: float,
) -> jax.Array:
    """Samples one output per batch example, conditioned on its text (and low-res / <C, M> inputs).

    Returns `[B, (T,) H, W, 3]` in [-1, 1]. SSR low-res inputs are noise-augmented at t = 0 (clean).
    """
    schedule = config.schedule_fn
    input_rng, aug_rng, noise_rng, sample_rng = jax.random.split(rng, 4)
    text_embeddings, text_mask = text_lib.encode_batch_text(adapter, text_encoder_params, batch)
    inputs = adapter.inputs_from_batch(batch, input_rng)
    noise_aug_logsnr = None
    if inputs.low_res is not None:
        low_res, noise_aug_logsnr = augmentation.noise_augment(aug_rng, inputs.low_res, t=0.0)
        inputs = dataclasses.replace(inputs, low_res=low_res)
    cond = {"text_embeddings": text_embeddings, "text_mask": text_mask, "inputs": inputs,
            "noise_aug_logsnr": noise_aug_logsnr}
    null_embeddings, null_mask = text_lib.null_text(text_embeddings, text_mask)
    null_cond = {**cond, "text_embeddings": null_embeddings, "text_mask": null_mask}

    def model_fn(z, logsnr, c):
        return adapter.apply(params, z, logsnr, c["inputs"], c["text_embeddings"], c["text_mask"],
                             c["noise_aug_logsnr"], train=False)

    denoise_fn = guidance.guided_denoiser(model_fn, cond, null_cond, guidance_weight, adapter.parameterization,
                                          learned_variance=adapter.learned_variance)
    z_init = jax.random.normal(noise_rng, inputs.x0.shape, jnp.float32)
    row_keys = samplers.keys_per_row(sample_rng, z_init.shape[0])
    return samplers.sample(denoise_fn, row_keys, z_init, schedule, num_steps, clip_output=True)


def to_uint8_frames(samples: np.ndarray) -> np.ndarray:
    """`[B, (T,) H, W, 3]` in [-1, 1] -> uint8 `[B, T, H, W, 3]` (an image is a one-frame video)."""
    samples = np.asarray(samples, np.float32)
    if samples.ndim == 4:
        samples = samples[:, None]
    return np.round((np.clip(samples, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def filmstrips(frames: np.ndarray) -> np.ndarray:
    """uint8 `[B, T, H, W, 3]` -> `[B, H, T * W, 3]`: frames side by side, for TensorBoard images."""
    batch, num_frames, height, width, channels = frames.shape
    return frames.transpose(0, 2, 1, 3, 4).reshape(batch, height, num_frames * width, channels)


def write_videos(directory: str, step: int, frames: np.ndarray, fps: float) -> list[str]:
    """Writes `frames: uint8 [B, T, H, W, 3]` as `directory/step_<step>_<i>.mp4` (local or `gs://`); returns the
    paths."""
    paths = []
    for index, video in enumerate(frames):
        path = storage.join(directory, f"step_{step:08d}_{index}.mp4")
        video_io.write_mp4(path, video, fps)
        paths.append(path)
    return paths
