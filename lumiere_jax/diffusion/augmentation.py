"""Noise conditioning augmentation for super-resolution inputs (Imagen, Cascaded Diffusion Models).

The low-res input is noised with the forward process at a per-example level; the model is told that level
as a log-SNR (`noise_aug_logsnr` in the UNet call). Training draws the level at random; sampling fixes it.

The augmentation has its own schedule, `AUGMENTATION_SCHEDULE`: the plain cosine schedule, for the low-res
frames it noises (as in Imagen's cascades), whatever schedule the SR model itself is trained with (the SR's
is resolution-shifted, stages/diffusion_config.py). Training and sampling both use it, so a level `t` means the same
noise in both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lumiere_jax.diffusion import losses
from lumiere_jax.diffusion import schedules

AUGMENTATION_SCHEDULE: schedules.Schedule = schedules.logsnr_cosine


def augmentation_logsnr(
    rng: jax.Array, batch_size: int, schedule: schedules.Schedule = AUGMENTATION_SCHEDULE, max_t: float = 1.0,
) -> jax.Array:
    """Random augmentation levels for training: `t ~ U[0, max_t]` per example, returned as `logsnr: [B]`."""
    if not 0.0 < max_t <= 1.0:
        raise ValueError(f"max_t={max_t} must lie in (0, 1]; it caps how strongly low-res inputs are noised")
    return schedule(jax.random.uniform(rng, (batch_size,), jnp.float32, 0.0, max_t))


def noise_augment(
    rng: jax.Array,
    low_res: jax.Array,
    schedule: schedules.Schedule = AUGMENTATION_SCHEDULE,
    t: float | jax.Array | None = None,
    aug_logsnr: float | jax.Array | None = None,
    max_t: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """Noises `low_res: [B, ...]` at a level given as `t` or as `aug_logsnr` (scalar or `[B]`), else drawn.

    With neither given, `t ~ U[0, max_t]` per example (training). Returns `(noised_low_res: [B, ...],
    aug_logsnr: [B])` with `noised = alpha * low_res + sigma * eps`; `aug_logsnr` is what the model is told.
    """
    if t is not None and aug_logsnr is not None:
        raise ValueError("give the augmentation level as t or as aug_logsnr, not both")
    level_rng, eps_rng = jax.random.split(rng)
    batch_size = low_res.shape[0]
    if t is not None:
        aug_logsnr = schedule(jnp.asarray(t, jnp.float32))
    elif aug_logsnr is None:
        aug_logsnr = augmentation_logsnr(level_rng, batch_size, schedule, max_t)
    aug_logsnr = jnp.broadcast_to(jnp.asarray(aug_logsnr, jnp.float32), (batch_size,))
    eps = jax.random.normal(eps_rng, low_res.shape, low_res.dtype)
    return losses.noisy_sample(low_res, eps, aug_logsnr), aug_logsnr
