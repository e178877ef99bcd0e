"""DeepFloyd IF's diffusion process on our continuous-time conventions: pure functions.

IF is a discrete-time DDPM over N = 1000 timesteps with the squared-cosine schedule (Nichol & Dhariwal 2021):
    alpha_bar(s) = cos^2(((s + 0.008) / 1.008) pi / 2),   beta_i = min(1 - alpha_bar((i+1)/N) / alpha_bar(i/N), 0.999)
    alphas_cumprod[t] = prod_{i <= t} (1 - beta_i),       z_t = sqrt(alphas_cumprod[t]) x0 + sqrt(1 - ...) eps
Its U-Net predicts eps (channels 0..2) and a learned-range variance interpolation `v in [-1, 1]` (3..5), and is
conditioned on the integer timestep t, not on log-SNR.

How it maps onto ours (our choice): every IF timestep is a log-SNR, `logsnr_t = log(alphas_cumprod[t] /
(1 - alphas_cumprod[t]))`, so a discrete step t -> s is our ancestral step between those two log-SNRs: its mean
is `samplers.posterior_mean` with `x0_hat` from eps, and only its variance differs, interpolated in log space
between the posterior variance and `beta_ts = 1 - alpha_t^2 / alpha_s^2` (Improved DDPM; `samplers.ddpm_step`
with the variance channels, which the sampling job uses through `samplers.LearnedVariance`):
    log var = (v + 1) / 2 * log(beta_ts) + (1 - v) / 2 * log(posterior_variance)
The inflated IF model keeps IF's parameterisation (eps + learned range, timestep conditioning): its frozen
spatial layers were trained on it, and the temporal layers start as identities, so any other target or
conditioning would first have to retrain what IF already knows. `timestep_from_logsnr` lets our log-SNR
samplers drive the model; with the IF timesteps' own log-SNRs the steps equal diffusers' DDPMScheduler's.
The schedule itself (`alphas_cumprod`, timestep -> log-SNR, and the continuous-time "if_squared_cosine" our
trainer draws from) lives in schedules.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lumiere_jax.diffusion import guidance
from lumiere_jax.diffusion import parameterization as param_lib
from lumiere_jax.diffusion import samplers, schedules

IF_THRESHOLD_PERCENTILE = 95.0  # IF's dynamic thresholding: 95th percentile of |x0|, scale capped at 1.5
IF_THRESHOLD_MAX_SCALE = 1.5


def timestep_from_logsnr(logsnr: jax.Array, alphas_cumprod: jax.Array) -> jax.Array:
    """The (fractional) IF timestep with this log-SNR: piecewise-linear inverse of `timestep_logsnr` over
    0..N-1, clipped to that range; exact at the integer timesteps. `[B] -> [B]` float32."""
    table = schedules.timestep_logsnr(jnp.arange(len(alphas_cumprod)), alphas_cumprod)  # decreasing in t
    steps = jnp.arange(len(alphas_cumprod), dtype=jnp.float32)
    return jnp.interp(-jnp.asarray(logsnr, jnp.float32), -table, steps)


def leading_timesteps(num_steps: int, num_timesteps: int = schedules.IF_NUM_TIMESTEPS) -> np.ndarray:
    """IF's sampling timesteps (diffusers' "leading" spacing): `[num_steps]` int, from noisiest, step N // num_steps."""
    if not 0 < num_steps <= num_timesteps:
        raise ValueError(f"num_steps={num_steps} must lie in 1..{num_timesteps}")
    return (np.arange(num_steps) * (num_timesteps // num_steps))[::-1].astype(np.int64)


def x0_from_output(z: jax.Array, model_output: jax.Array, logsnr_t: jax.Array,
                   threshold: bool = True) -> jax.Array:
    """x0 implied by the eps channels of an IF output `[B, ..., 6]` at `z: [B, ..., 3]`, dynamically thresholded
    as IF samples (95th percentile, scale capped at 1.5) when `threshold`."""
    eps = model_output[..., :3]
    alpha, sigma = param_lib.alpha_sigma_like(logsnr_t, z)
    x0 = param_lib.x0_from_eps(z, eps, alpha, sigma)
    return guidance.dynamic_threshold(x0, IF_THRESHOLD_PERCENTILE, IF_THRESHOLD_MAX_SCALE) if threshold else x0


def learned_range_step(z: jax.Array, model_output: jax.Array, logsnr_t: jax.Array, logsnr_s: jax.Array,
                       noise: jax.Array, threshold: bool = True) -> jax.Array:
    """One IF ancestral step from `z: [B, ..., 3]` at `logsnr_t` to `logsnr_s` (+inf: the last step, no noise)
    given the model's `[B, ..., 6]` output: posterior mean at the (thresholded) x0, plus the learned-range noise
    (`samplers.ddpm_step` with the variance channels)."""
    x0_hat = x0_from_output(z, model_output, logsnr_t, threshold)
    return samplers.ddpm_step(z, x0_hat, logsnr_t, logsnr_s, noise, model_output[..., 3:])
