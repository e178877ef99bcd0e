"""Model output parameterisations (eps, x0, v) and exact conversions between them.

With `z = alpha * x0 + sigma * eps` and `alpha^2 + sigma^2 = 1`:
    v   = alpha * eps - sigma * x0          (Salimans & Ho 2022; Imagen Video's default)
    x0  = alpha * z - sigma * v  = (z - sigma * eps) / alpha
    eps = sigma * z + alpha * v  = (z - alpha * x0) / sigma
Conversions take `alpha, sigma` already broadcastable against `z`; `to_x0`, `from_x0` and `target` take
`logsnr: [B]` (or a scalar) and broadcast it against `[B, ...]` (image or video) themselves.
Converting eps to x0 divides by alpha, which is tiny at low log-SNR: prefer v (or x0) for sampling.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lumiere_jax.diffusion import schedules

PARAMETERIZATIONS: tuple[str, ...] = ("eps", "x0", "v")


def check_parameterization(parameterization: str) -> None:
    """Raises a clear error for a parameterisation name we do not know."""
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {parameterization!r}; choose one of {PARAMETERIZATIONS}")


def broadcast_to_rank(per_example: jax.Array, ndim: int) -> jax.Array:
    """Reshapes `per_example: [B]` to `[B, 1, ..., 1]` with `ndim` dims; scalars pass through unchanged."""
    per_example = jnp.asarray(per_example)
    if per_example.ndim == 0:
        return per_example
    if per_example.ndim != 1:
        raise ValueError(f"expected a per-example vector [B] or a scalar, got shape {per_example.shape}")
    return per_example.reshape(per_example.shape + (1,) * (ndim - 1))


def alpha_sigma_like(logsnr: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`alpha, sigma` for `logsnr: [B]` (or scalar), shaped to broadcast against `z: [B, ...]`."""
    alpha, sigma = schedules.alpha_sigma(logsnr)
    return broadcast_to_rank(alpha, z.ndim), broadcast_to_rank(sigma, z.ndim)


def x0_from_eps(z, eps, alpha, sigma):
    """`x0 = (z - sigma * eps) / alpha`."""
    return (z - sigma * eps) / alpha


def x0_from_v(z, v, alpha, sigma):
    """`x0 = alpha * z - sigma * v`."""
    return alpha * z - sigma * v


def eps_from_x0(z, x0, alpha, sigma):
    """`eps = (z - alpha * x0) / sigma`."""
    return (z - alpha * x0) / sigma


def eps_from_v(z, v, alpha, sigma):
    """`eps = sigma * z + alpha * v`."""
    return sigma * z + alpha * v


def v_from_x0_eps(x0, eps, alpha, sigma):
    """`v = alpha * eps - sigma * x0`."""
    return alpha * eps - sigma * x0


def v_from_x0(z, x0, alpha, sigma):
    """`v = (alpha * z - x0) / sigma` (v of the x0 consistent with z)."""
    return (alpha * z - x0) / sigma


def to_x0(prediction: jax.Array, z: jax.Array, logsnr: jax.Array, parameterization: str) -> jax.Array:
    """Converts a raw model prediction `[B, ...]` in `parameterization` to the x0 it implies at `z`."""
    check_parameterization(parameterization)
    alpha, sigma = alpha_sigma_like(logsnr, z)
    if parameterization == "x0":
        return prediction
    if parameterization == "eps":
        return x0_from_eps(z, prediction, alpha, sigma)
    return x0_from_v(z, prediction, alpha, sigma)


def from_x0(x0: jax.Array, z: jax.Array, logsnr: jax.Array, parameterization: str) -> jax.Array:
    """Inverse of `to_x0`: the prediction in `parameterization` that implies `x0` at `z`."""
    check_parameterization(parameterization)
    alpha, sigma = alpha_sigma_like(logsnr, z)
    if parameterization == "x0":
        return x0
    if parameterization == "eps":
        return eps_from_x0(z, x0, alpha, sigma)
    return v_from_x0(z, x0, alpha, sigma)


def target(x0: jax.Array, eps: jax.Array, logsnr: jax.Array, parameterization: str) -> jax.Array:
    """Regression target for a model trained in `parameterization`, from the clean data and the noise drawn."""
    check_parameterization(parameterization)
    if parameterization == "x0":
        return x0
    if parameterization == "eps":
        return eps
    alpha, sigma = alpha_sigma_like(logsnr, x0)
    return v_from_x0_eps(x0, eps, alpha, sigma)


def preconditioned_input_scale(alpha: jax.Array, sigma: jax.Array, data_std: float) -> jax.Array:
    """Standard deviation of `z = alpha * x0 + sigma * eps` for data of standard deviation `data_std`; a
    preconditioned model sees `z / scale` (unit variance at every noise level). 1 for `data_std = 1`."""
    return jnp.sqrt(sigma**2 + (data_std * alpha) ** 2)


def preconditioned_x0(raw: jax.Array, z: jax.Array, alpha: jax.Array, sigma: jax.Array, data_std: float) -> jax.Array:
    """x0 from the output `raw` of a model preconditioned for data of standard deviation `data_std`.

    Karras et al. 2022 (EDM) written for variance-preserving `z`: `x0 = c_skip * z + c_out * (-raw)` with
    `c_skip = data_std^2 * alpha / scale^2`, `c_out = sigma * data_std / scale` and `scale` the standard deviation
    of z (`preconditioned_input_scale`). For `data_std = 1` it is the v-parameterisation (`raw = v`); for small
    `data_std`, at high noise the output is scaled by `data_std`, so an imprecise model errs on that scale.
    """
    scale = preconditioned_input_scale(alpha, sigma, data_std)
    return (data_std**2 * alpha / scale**2) * z - (sigma * data_std / scale) * raw
