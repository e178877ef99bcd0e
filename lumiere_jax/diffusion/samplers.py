"""Samplers: DDIM, ancestral DDPM and DPM-Solver++(2M), `jax.lax.scan` loops over a uniform time grid.

A denoiser is `denoise_fn(z, logsnr) -> x0_hat` with `z: [B, ...]`, `logsnr: [B]` (docs/ARCHITECTURE.md).
Every step is affine in the denoiser's x0 predictions, which is why MultiDiffusion may fuse x0 predictions
before stepping. Steps go from the noisier `logsnr_t` to the cleaner `logsnr_s` (`logsnr_s > logsnr_t`).

DPM-Solver++(2M) (Lu et al. 2022; our choice of multistep solver) integrates the probability-flow ODE in
`lambda = logsnr / 2` with the data prediction linear in lambda over the last two steps. Written out, its
update is the deterministic DDIM step applied to an extrapolated prediction:

    h_i = lambda_{i+1} - lambda_i,   r_i = h_{i-1} / h_i
    D_i = x0_i + (x0_i - x0_{i-1}) / (2 r_i)          (D_0 = x0_0: the first step is first order)
    z_{i+1} = ddim_step(z_i, D_i, eta = 0)

so it needs no extra denoiser call, keeps one previous prediction, and stays affine in the (fused) x0
predictions. As for DDIM the output is the last call's x0 prediction.

A denoiser of a model with a learned-range variance (Improved DDPM; DeepFloyd IF) returns `LearnedVariance(x0,
variance_interpolation)` instead of the bare x0_hat: the ancestral sampler ("ddpm") then draws each step's noise
with the model's variance, interpolated in log space between the posterior variance and `beta_ts`; the other
samplers read the x0 alone. Wrappers that change x0 (thresholding, known-content replacement) use `map_x0`, and
MultiDiffusion fuses both fields with the same weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from lumiere_jax.diffusion import parameterization as param_lib
from lumiere_jax.diffusion import schedules

Denoiser = Callable[[jax.Array, jax.Array], "jax.Array | LearnedVariance"]

SAMPLERS: tuple[str, ...] = ("ddim", "ddpm", "dpmpp_2m")
TIME_SPACINGS: tuple[str, ...] = ("uniform", "quadratic")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LearnedVariance:
    """A denoiser's output for a model that also predicts its step variance (module doc)."""

    x0: jax.Array  # [B, ..., C] x0_hat
    variance_interpolation: jax.Array  # [B, ..., C] in [-1, 1]: -1 the posterior variance, +1 beta_ts


def split_learned_variance(raw: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A learned-variance model's raw output `[..., 2C]` -> (its prediction `[..., C]`, the variance
    interpolation `[..., C]`): the prediction channels come first (IF's layout)."""
    prediction, variance_interpolation = jnp.split(raw, 2, axis=-1)
    return prediction, variance_interpolation


def x0_of(output: jax.Array | LearnedVariance) -> jax.Array:
    """The x0_hat of a denoiser's output."""
    return output.x0 if isinstance(output, LearnedVariance) else output


def map_x0(fn: Callable[[jax.Array], jax.Array], output: jax.Array | LearnedVariance) -> jax.Array | LearnedVariance:
    """`fn` applied to the x0_hat of a denoiser's output; a learned variance passes through unchanged."""
    if isinstance(output, LearnedVariance):
        return LearnedVariance(fn(output.x0), output.variance_interpolation)
    return fn(output)


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


def posterior_mean(z: jax.Array, x0_hat: jax.Array, logsnr_t: jax.Array, logsnr_s: jax.Array) -> jax.Array:
    """Mean of `q(z_s | z_t, x0 = x0_hat)`:
        alpha_ts sigma_s^2 / sigma_t^2 * z_t + alpha_s sigma_ts^2 / sigma_t^2 * x0_hat
    with `alpha_ts = alpha_t / alpha_s`, `sigma_ts^2 = sigma_t^2 - alpha_ts^2 sigma_s^2`.
    """
    alpha_t, sigma_t = param_lib.alpha_sigma_like(logsnr_t, z)
    alpha_s, sigma_s = param_lib.alpha_sigma_like(logsnr_s, z)
    # sigma_ts^2 / sigma_t^2 = 1 - exp(logsnr_t - logsnr_s), written stably.
    kept_fraction = param_lib.broadcast_to_rank(
        -jnp.expm1(jnp.asarray(logsnr_t, jnp.float32) - logsnr_s), z.ndim)
    return alpha_t / alpha_s * jnp.square(sigma_s) / jnp.square(sigma_t) * z + alpha_s * kept_fraction * x0_hat


def learned_range_log_variance(variance_interpolation: jax.Array, logsnr_t: jax.Array,
                               logsnr_s: jax.Array) -> jax.Array:
    """Log variance of the step `logsnr_t -> logsnr_s` of a model with a learned range (Improved DDPM):
    `(v + 1)/2 log(beta_ts) + (1 - v)/2 log(posterior_variance)`, `beta_ts = 1 - alpha_t^2 / alpha_s^2`.
    `variance_interpolation: [B, ...]` (v), `logsnr_*: [B]`."""
    ndim = variance_interpolation.ndim
    beta = -jnp.expm1(jax.nn.log_sigmoid(logsnr_t) - jax.nn.log_sigmoid(logsnr_s))
    min_log = jnp.log(jnp.maximum(posterior_variance(logsnr_t, logsnr_s), 1e-20))
    frac = (variance_interpolation + 1) / 2
    return (frac * param_lib.broadcast_to_rank(jnp.log(beta), ndim)
            + (1 - frac) * param_lib.broadcast_to_rank(min_log, ndim))


def ddpm_step(
    z: jax.Array,
    x0_hat: jax.Array,
    logsnr_t: jax.Array,
    logsnr_s: jax.Array,
    noise: jax.Array,
    variance_interpolation: jax.Array | None = None,
) -> jax.Array:
    """One ancestral step: a sample of the Gaussian posterior `q(z_s | z_t, x0 = x0_hat)`.

    Mean: `posterior_mean`; variance `posterior_variance = sigma_ts^2 sigma_s^2 / sigma_t^2`, or with a model's
    `variance_interpolation: [B, ...]` the learned-range variance (`learned_range_log_variance`); the step to
    `logsnr_s = +inf` adds no noise.
    """
    mean = posterior_mean(z, x0_hat, logsnr_t, logsnr_s)
    if variance_interpolation is None:
        variance = param_lib.broadcast_to_rank(posterior_variance(logsnr_t, logsnr_s), z.ndim)
        return mean + jnp.sqrt(variance) * noise
    log_variance = learned_range_log_variance(variance_interpolation.astype(jnp.float32), logsnr_t, logsnr_s)
    last = param_lib.broadcast_to_rank(jnp.isinf(jnp.asarray(logsnr_s)), z.ndim)
    return jnp.where(last, mean, mean + jnp.exp(0.5 * log_variance) * noise)


def multistep_weights(logsnrs: jax.Array) -> jax.Array:
    """Weights `[N]` of the DPM-Solver++(2M) extrapolation, `D_i = x0_i + w_i (x0_i - x0_{i-1})`.

    `logsnrs: [N + 1]` is the step grid; `w_i = h_i / (2 h_{i-1})` with `h` the steps in `lambda = logsnr / 2`
    (`1 / (2 r_i)` above), and `w_0 = 0` since there is no previous prediction.
    """
    steps = jnp.diff(jnp.asarray(logsnrs, jnp.float32))  # [N], proportional to h
    return jnp.concatenate([jnp.zeros((1,), jnp.float32), steps[1:] / (2.0 * steps[:-1])])


def time_grid(num_steps: int, t_start: float = 1.0, spacing: str = "uniform") -> jax.Array:
    """Grid `t_start = t_0 > t_1 > ... > t_num_steps = 0`: `[num_steps + 1]`.

    "uniform": `t_i = t_start (1 - i / N)`; "quadratic": `t_i = t_start (1 - i / N)^2`, denser at low noise
    (DDIM's and DPM-Solver's "quadratic" grid), where few-step samplers lose the most.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps} must be at least 1")
    if not 0.0 < t_start <= 1.0:
        raise ValueError(f"t_start={t_start} must lie in (0, 1]; 1 samples from noise, smaller values run SDEdit")
    if spacing not in TIME_SPACINGS:
        raise ValueError(f"unknown time spacing {spacing!r}; choose one of {TIME_SPACINGS}")
    remaining = jnp.linspace(1.0, 0.0, num_steps + 1, dtype=jnp.float32)
    return t_start * (remaining if spacing == "uniform" else jnp.square(remaining))


def default_spacing(sampler: str) -> str:
    """The grid a sampler uses unless told otherwise: "quadratic" for the few-step solver, else "uniform"."""
    return "quadratic" if sampler == "dpmpp_2m" else "uniform"


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
    spacing: str | None = None,
) -> jax.Array:
    """Runs `num_steps` sampler steps from `z_init` (at `t_start`) to t = 0 and returns the final x0_hat.

    `z_init: [B, ...]`: Gaussian noise for generation (`t_start = 1`), or for SDEdit a video noised to `t_start`
    with `losses.noisy_sample(video, eps, schedule(t_start))`. `keys: [B]` typed keys, one per row: row b's
    step noise comes from `keys[b]` only, so with a denoiser that treats rows independently a row's output
    does not depend on its batch-mates, the batch size or its position. The denoiser runs once per step
    (`num_steps` calls); the last call's x0_hat is the output, optionally clipped to [-1, 1]. A denoiser may
    return `LearnedVariance`: "ddpm" then steps with the model's variance. `eta` is used by
    "ddim" only; "dpmpp_2m" is deterministic and draws no step noise. `spacing`: the time grid (`time_grid`;
    None: `default_spacing(sampler)`). Step noise covers a row's whole `z` (MultiDiffusion relies on this: never
    per window).
    Jittable with `denoise_fn`, `num_steps`, `t_start`, `sampler`, `clip_output` and `spacing` static.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    batch_size = z_init.shape[0]
    check_row_keys(keys, batch_size)
    logsnrs = schedule(time_grid(num_steps, t_start, spacing or default_spacing(sampler)))

    def step(carry, inputs):
        z, x0_previous = carry
        index, logsnr_t, logsnr_s, multistep_weight = inputs
        output = denoise_fn(z, jnp.full((batch_size,), logsnr_t, jnp.float32))
        x0_hat = x0_of(output).astype(z.dtype)
        if sampler == "dpmpp_2m":
            extrapolated = x0_hat + multistep_weight * (x0_hat - x0_previous)
            z_next = ddim_step(z, extrapolated, logsnr_t, logsnr_s, 0.0, jnp.zeros_like(z))
        elif sampler == "ddim":
            z_next = ddim_step(z, x0_hat, logsnr_t, logsnr_s, eta, step_noise(keys, index, z.shape[1:], z.dtype))
        else:
            variance_interpolation = output.variance_interpolation if isinstance(output, LearnedVariance) else None
            z_next = ddpm_step(z, x0_hat, logsnr_t, logsnr_s, step_noise(keys, index, z.shape[1:], z.dtype),
                               variance_interpolation)
        return (z_next.astype(z.dtype), x0_hat), None

    steps = (jnp.arange(num_steps), logsnrs[:-1], logsnrs[1:], multistep_weights(logsnrs))
    (_, x0_hat), _ = jax.lax.scan(step, (z_init, jnp.zeros_like(z_init)), steps)
    return jnp.clip(x0_hat, -1.0, 1.0) if clip_output else x0_hat
