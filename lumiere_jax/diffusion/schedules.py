"""Continuous-time noise schedules: pure functions `t -> logsnr` for `t in [0, 1]`.

Convention (docs/ARCHITECTURE.md): variance preserving, `z_t = alpha * x0 + sigma * eps` with
`alpha^2 = sigmoid(logsnr)`, `sigma^2 = sigmoid(-logsnr)`. `t = 0` is (almost) clean data, `t = 1` (almost)
pure noise; every schedule here is strictly decreasing in t.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

Schedule = Callable[[jax.Array], jax.Array]

DEFAULT_LOGSNR_MIN = -20.0
DEFAULT_LOGSNR_MAX = 20.0
IF_NUM_TIMESTEPS = 1000  # DeepFloyd IF's discrete DDPM (diffusion/discrete.py)


def alpha_sigma(logsnr: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Signal and noise scales of the VP process: `alpha = sqrt(sigmoid(logsnr))`, `sigma = sqrt(sigmoid(-logsnr))`.

    `alpha^2 + sigma^2 = 1` and `logsnr = log(alpha^2 / sigma^2)`.
    """
    logsnr = jnp.asarray(logsnr, jnp.float32)
    return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


def logsnr_cosine(
    t: jax.Array,
    logsnr_min: float = DEFAULT_LOGSNR_MIN,
    logsnr_max: float = DEFAULT_LOGSNR_MAX,
) -> jax.Array:
    """Cosine schedule restricted to `[logsnr_min, logsnr_max]` (Imagen Video; "simple diffusion" form).

    The unrestricted cosine schedule is `alpha = cos(pi t / 2)`, i.e. `logsnr(u) = -2 log tan(pi u / 2)`.
    Rather than clipping, t is mapped linearly onto the angle interval whose ends give exactly the limits:

        a = atan(exp(-logsnr_max / 2)),  b = atan(exp(-logsnr_min / 2))
        logsnr(t) = -2 log tan(a + t (b - a))

    so `logsnr(0) = logsnr_max`, `logsnr(1) = logsnr_min`, smooth and strictly decreasing in between.
    """
    if not logsnr_min < logsnr_max:
        raise ValueError(f"logsnr_min={logsnr_min} must be smaller than logsnr_max={logsnr_max}")
    angle_min = math.atan(math.exp(-0.5 * logsnr_max))
    angle_max = math.atan(math.exp(-0.5 * logsnr_min))
    t = jnp.asarray(t, jnp.float32)
    return -2.0 * jnp.log(jnp.tan(angle_min + t * (angle_max - angle_min)))


def resolution_shift(resolution: int, base_resolution: int) -> float:
    """Log-SNR shift for training at `resolution` with a schedule tuned at `base_resolution`.

        shift = 2 log(base_resolution / resolution)

    Negative for higher resolutions: more noise at the same t, since neighbouring pixels are more correlated
    ("simple diffusion", Hoogeboom et al. 2023).
    """
    if resolution <= 0 or base_resolution <= 0:
        raise ValueError(
            f"resolution={resolution} and base_resolution={base_resolution} must both be positive pixel counts")
    return 2.0 * math.log(base_resolution / resolution)


def logsnr_shifted_cosine(
    t: jax.Array,
    resolution: int,
    base_resolution: int = 64,
    logsnr_min: float = DEFAULT_LOGSNR_MIN,
    logsnr_max: float = DEFAULT_LOGSNR_MAX,
) -> jax.Array:
    """Resolution-shifted cosine schedule: `logsnr(t) = logsnr_cosine(t) + 2 log(base_resolution / resolution)`.

    The whole curve moves, endpoints included (ours, as in "simple diffusion"): its range is
    `[logsnr_min + shift, logsnr_max + shift]`. `resolution == base_resolution` gives the plain cosine schedule.
    """
    shift = resolution_shift(resolution, base_resolution)
    return logsnr_cosine(t, logsnr_min, logsnr_max) + shift


def squared_cosine_alphas_cumprod(num_timesteps: int = IF_NUM_TIMESTEPS, max_beta: float = 0.999) -> np.ndarray:
    """`alphas_cumprod: [num_timesteps]` float32 of the squared-cosine schedule (betas in float64, product in
    float32, as diffusers' "squaredcos_cap_v2")."""
    def alpha_bar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta)
             for i in range(num_timesteps)]
    return np.cumprod(1.0 - np.asarray(betas, np.float32), dtype=np.float32)


def timestep_logsnr(timesteps: jax.Array, alphas_cumprod: jax.Array) -> jax.Array:
    """`logsnr_t = log(alphas_cumprod[t] / (1 - alphas_cumprod[t]))` of integer `timesteps: [B]`; t = -1 (after
    the last step: clean data) gives +inf."""
    alphas_cumprod = jnp.asarray(alphas_cumprod, jnp.float32)
    clean = timesteps < 0
    alpha_bar = alphas_cumprod[jnp.where(clean, 0, timesteps)]
    return jnp.where(clean, jnp.inf, jnp.log(alpha_bar) - jnp.log1p(-alpha_bar))


def logsnr_if_squared_cosine(t: jax.Array, num_timesteps: int = IF_NUM_TIMESTEPS) -> jax.Array:
    """DeepFloyd IF's discrete squared-cosine schedule in continuous time: `t in [0, 1]` is IF timestep
    `t * (num_timesteps - 1)`, log-SNR linear between IF's integer timesteps (exact at them)."""
    table = timestep_logsnr(jnp.arange(num_timesteps), squared_cosine_alphas_cumprod(num_timesteps))
    return jnp.interp(jnp.asarray(t, jnp.float32) * (num_timesteps - 1), jnp.arange(num_timesteps), table)


SCHEDULES: dict[str, Callable[..., jax.Array]] = {
    "cosine": logsnr_cosine,
    "shifted_cosine": logsnr_shifted_cosine,
    "if_squared_cosine": logsnr_if_squared_cosine,
}


def get_schedule(name: str, **kwargs) -> Schedule:
    """Returns the schedule `t -> logsnr` registered as `name`, with `kwargs` bound (e.g. `resolution=256`)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    schedule_fn = SCHEDULES[name]
    try:
        inspect.signature(schedule_fn).bind(0.0, **kwargs)
    except TypeError as error:
        raise ValueError(
            f"schedule {name!r} takes {inspect.signature(schedule_fn)}; got kwargs {kwargs} ({error})") from None
    return functools.partial(schedule_fn, **kwargs)
