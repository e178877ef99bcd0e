"""DDIM and ancestral DDPM samplers: `jax.lax.scan` loops over a uniform time grid, driven by a denoiser.

A denoiser is `denoise_fn(z, logsnr) -> x0_hat` with `z: [B, ...]`, `logsnr: [B]` (docs/ARCHITECTURE.md).
Every step is affine in `x0_hat`, which is why MultiDiffusion may fuse x0 predictions before stepping.
Steps go from the noisier `logsnr_t` to the cleaner `logsnr_s` (`logsnr_s > logsnr_t`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from lumiere_jax.diffusion import parameterization as param_lib
from lumiere_jax.diffusion import schedules

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]

SAMPLERS: tuple[str, ...] = ("ddim", "ddpm")


def posterior_variance(logsnr_t: jax.Array, logsnr_s: jax.Array) -> jax.Array:
    """Variance of `q(z_s | z_t, x0)`: `sigma_s^2 * (1 - exp(logsnr_t - logsnr_s))`."""
    _, sigma_s = schedules.alpha_sigma(logsnr_s)
    return jnp.square(sigma_s) * -jnp.expm1(jnp.asarray(logsnr_t, jnp.float32) - logsnr_s)


def ddim_step(
    z: jax.Array,
    x0_hat: jax.Array,
    logsnr_t: jax.Array,
    logsnr_s: jax.Array,
    eta: float | jax.Array,
    noise: jax.Array,
) -> jax.Array:
    """One generalised DDIM step (Song et al. 2021) from `z_t` to `z_s`; `logsnr_*: [B]` or scalars.

        eps_hat = (z_t - alpha_t x0_hat) / sigma_t
        c^2     = eta^2 sigma_s^2 (1 - exp(logsnr_t - logsnr_s))
        z_s     = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c noise

    `eta = 0` is deterministic; `eta = 1` samples the exact posterior `q(z_s | z_t, x0_hat)` (= `ddpm_step`).
    """
    alpha_t, sigma_t = param_lib.alpha_sigma_like(logsnr_t, z)
    alpha_s, sigma_s = param_lib.alpha_sigma_like(logsnr_s, z)
    noise_variance = jnp.square(eta) * param_lib.broadcast_to_rank(posterior_variance(logsnr_t, logsnr_s), z.ndim)
    eps_hat = param_lib.eps_from_x0(z, x0_hat, alpha_t, sigma_t)
    eps_scale = jnp.sqrt(jnp.maximum(jnp.square(sigma_s) - noise_variance, 0.0))
    return alpha_s * x0_hat + eps_scale * eps_hat + jnp.sqrt(noise_variance) * noise


def ddpm_step(
    z: jax.Array,
    x0_hat: jax.Array,
    logsnr_t: jax.Array,
    logsnr_s: jax.Array,
    noise: jax.Array,
) -> jax.Array:
    """One ancestral step: a sample of the Gaussian posterior `q(z_s | z_t, x0 = x0_hat)`.

    With `alpha_ts = alpha_t / alpha_s` and `sigma_ts^2 = sigma_t^2 - alpha_ts^2 sigma_s^2`:
        mean     = alpha_ts sigma_s^2 / sigma_t^2 * z_t + alpha_s sigma_ts^2 / sigma_t^2 * x0_hat
        variance = sigma_ts^2 sigma_s^2 / sigma_t^2
    """
    alpha_t, sigma_t = param_lib.alpha_sigma_like(logsnr_t, z)
    alpha_s, sigma_s = param_lib.alpha_sigma_like(logsnr_s, z)
    alpha_ts = alpha_t / alpha_s
    # sigma_ts^2 / sigma_t^2 = 1 - exp(logsnr_t - logsnr_s), written stably.
    kept_fraction = param_lib.broadcast_to_rank(
        -jnp.expm1(jnp.asarray(logsnr_t, jnp.float32) - logsnr_s), z.ndim)
    mean = alpha_ts * jnp.square(sigma_s) / jnp.square(sigma_t) * z + alpha_s * kept_fraction * x0_hat
    return mean + jnp.sqrt(kept_fraction) * sigma_s * noise


def time_grid(num_steps: int, t_start: float = 1.0) -> jax.Array:
    """Uniform grid `t_start = t_0 > t_1 > ... > t_num_steps = 0`: `[num_steps + 1]`."""
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps} must be at least 1")
    if not 0.0 < t_start <= 1.0:
        raise ValueError(f"t_start={t_start} must lie in (0, 1]; 1 samples from noise, smaller values run SDEdit")
    return jnp.linspace(t_start, 0.0, num_steps + 1, dtype=jnp.float32)


def step_noise(keys: jax.Array, index: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """Standard normal noise `[B, *shape]` of step `index`, row b drawn from `fold_in(keys[b], index)` alone."""
    return jax.vmap(lambda key: jax.random.normal(jax.random.fold_in(key, index), shape, dtype))(keys)


def keys_per_row(rng: jax.Array, batch_size: int) -> jax.Array:
    """Typed keys `[B]` split from one key (typed, or raw `uint32 [2]`), for callers without keys per row."""
    if not jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.random.wrap_key_data(rng)
    return jax.random.split(rng, batch_size)


def check_row_keys(keys: jax.Array, batch_size: int) -> None:
    """Raises unless `keys` is a typed key array `[B]`: one key per row."""
    if not jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key) or keys.shape != (batch_size,):
        raise ValueError(
            f"the sampler needs one typed key per row, shape ({batch_size},); got dtype {keys.dtype} and shape "
            f"{keys.shape}. Split a key per row: jax.random.split(jax.random.key(seed), {batch_size})")


def sample(
    denoise_fn: Denoiser,
    keys: jax.Array,
    z_init: jax.Array,
    schedule: schedules.Schedule,
    num_steps: int,
    t_start: float = 1.0,
    sampler: str = "ddim",
    eta: float = 0.0,
    clip_output: bool = False,
) -> jax.Array:
    """Runs `num_steps` sampler steps from `z_init` (at `t_start`) to t = 0 and returns the final x0_hat.

    `z_init: [B, ...]`: Gaussian noise for generation (`t_start = 1`), or for SDEdit a video noised to `t_start`
    with `losses.noisy_sample(video, eps, schedule(t_start))`. `keys: [B]` typed keys, one per row: row b's
    step noise comes from `keys[b]` only, so with a denoiser that treats rows independently a row's output
    does not depend on its batch-mates, the batch size or its position. The denoiser runs once per step
    (`num_steps` calls); the last call's x0_hat is the output, optionally clipped to [-1, 1]. `eta` is used by
    "ddim" only. Step noise covers a row's whole `z` (MultiDiffusion relies on this: never per window).
    Jittable with `denoise_fn`, `num_steps`, `t_start`, `sampler` and `clip_output` static.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    batch_size = z_init.shape[0]
    check_row_keys(keys, batch_size)
    logsnrs = schedule(time_grid(num_steps, t_start))

    def step(carry, inputs):
        z, _ = carry
        index, logsnr_t, logsnr_s = inputs
        x0_hat = denoise_fn(z, jnp.full((batch_size,), logsnr_t, jnp.float32)).astype(z.dtype)
        noise = step_noise(keys, index, z.shape[1:], z.dtype)
        if sampler == "ddim":
            z_next = ddim_step(z, x0_hat, logsnr_t, logsnr_s, eta, noise)
        else:
            z_next = ddpm_step(z, x0_hat, logsnr_t, logsnr_s, noise)
        return (z_next.astype(z.dtype), x0_hat), None

    steps = (jnp.arange(num_steps), logsnrs[:-1], logsnrs[1:])
    (_, x0_hat), _ = jax.lax.scan(step, (z_init, jnp.zeros_like(z_init)), steps)
    return jnp.clip(x0_hat, -1.0, 1.0) if clip_output else x0_hat
