"""Forward process and the denoising training loss, as pure functions of (prediction, x0, eps, logsnr)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lumiere_jax.diffusion import parameterization as param_lib
from lumiere_jax.diffusion import schedules


def noisy_sample(x0: jax.Array, eps: jax.Array, logsnr: jax.Array) -> jax.Array:
    """Forward process `z = alpha * x0 + sigma * eps`; `x0, eps: [B, ...]`, `logsnr: [B]` or scalar."""
    alpha, sigma = param_lib.alpha_sigma_like(logsnr, x0)
    return alpha * x0 + sigma * eps


def sample_noisy_inputs(
    rng: jax.Array, x0: jax.Array, schedule: schedules.Schedule,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Draws `t ~ U[0, 1]` per example and Gaussian noise; returns `(z, logsnr, eps, t)`.

    `x0: [B, ...]` -> `z, eps: [B, ...]`, `logsnr, t: [B]`. The model is conditioned on `logsnr`, not t.
    """
    t_rng, eps_rng = jax.random.split(rng)
    t = jax.random.uniform(t_rng, (x0.shape[0],), jnp.float32)
    eps = jax.random.normal(eps_rng, x0.shape, x0.dtype)
    logsnr = schedule(t)
    return noisy_sample(x0, eps, logsnr), logsnr, eps, t


def per_example_loss(
    prediction: jax.Array,
    x0: jax.Array,
    eps: jax.Array,
    logsnr: jax.Array,
    parameterization: str = "v",
    mask: jax.Array | None = None,
) -> jax.Array:
    """Mean squared error against the parameterisation's target, per example: `[B, ...] -> [B]`.

    `mask` (broadcastable to `x0`, e.g. `[B, T, H, W, 1]`; 1 = counts) turns the mean into a masked mean
    over the elements it selects; an example whose mask is all zero has loss 0.
    """
    target = param_lib.target(x0, eps, logsnr, parameterization)
    squared_error = jnp.square(prediction.astype(jnp.float32) - target.astype(jnp.float32))
    reduce_axes = tuple(range(1, squared_error.ndim))
    if mask is None:
        return jnp.mean(squared_error, axis=reduce_axes)
    mask = jnp.broadcast_to(mask.astype(jnp.float32), squared_error.shape)
    masked_sum = jnp.sum(squared_error * mask, axis=reduce_axes)
    return masked_sum / jnp.maximum(jnp.sum(mask, axis=reduce_axes), 1.0)


def diffusion_loss(
    prediction: jax.Array,
    x0: jax.Array,
    eps: jax.Array,
    logsnr: jax.Array,
    parameterization: str = "v",
    weights: jax.Array | None = None,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Scalar training loss: weighted mean over the batch of `per_example_loss`.

        loss = sum_b w_b * l_b / sum_b w_b        (w_b = 1 when `weights` is None)

    Normalising by `sum_b w_b` (our choice) lets 0/1 weights drop padding examples without changing the scale.
    """
    losses = per_example_loss(prediction, x0, eps, logsnr, parameterization, mask)
    if weights is None:
        return jnp.mean(losses)
    weights = jnp.asarray(weights, jnp.float32)
    if weights.shape != losses.shape:
        raise ValueError(f"weights must have one entry per example, shape {losses.shape}; got {weights.shape}")
    return jnp.sum(weights * losses) / jnp.maximum(jnp.sum(weights), 1e-12)
