"""Learning-rate schedule and optimizer (AdamW with global-norm clipping) for the trainable parameters."""

from __future__ import annotations

import dataclasses

import gin
import jax.numpy as jnp
import optax

DECAYS = ("constant", "cosine", "linear", "rsqrt")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW on the trainable parameters with linear warmup, then decay.

    Attributes:
      learning_rate: peak learning rate, reached after `warmup_steps`.
      warmup_steps: linear warmup from 0.
      decay: "constant", "cosine", "linear" (to `final_fraction * learning_rate` at `decay_steps`) or "rsqrt".
      decay_steps: steps over which the decay runs after warmup; None uses the run's `num_train_steps`.
      final_fraction: end value of cosine / linear decay as a fraction of the peak.
      b1, b2, eps, weight_decay: AdamW.
      grad_clip_norm: clip the global gradient norm to this (None: no clipping).
      ema_decay: decay of the exponential moving average of the trainable parameters (0 disables EMA).
    """

    learning_rate: float = 1e-4
    warmup_steps: int = 1000
    decay: str = "cosine"
    decay_steps: int | None = None
    final_fraction: float = 0.0
    b1: float = 0.9
    b2: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip_norm: float | None = 1.0
    ema_decay: float = 0.9999

    def __post_init__(self):
        if self.decay not in DECAYS:
            raise ValueError(f"unknown learning-rate decay {self.decay!r}; choose one of {DECAYS}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps={self.warmup_steps} must be >= 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay={self.ema_decay} must lie in [0, 1)")


def learning_rate_schedule(config: OptimizerConfig, num_train_steps: int) -> optax.Schedule:
    """`step -> learning rate`: linear warmup to the peak, then the configured decay."""
    peak = config.learning_rate
    decay_steps = max(1, config.decay_steps if config.decay_steps is not None
                      else num_train_steps - config.warmup_steps)
    warmup = optax.linear_schedule(0.0, peak, max(1, config.warmup_steps))
    if config.decay == "constant":
        decay = optax.constant_schedule(peak)
    elif config.decay == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=config.final_fraction)
    elif config.decay == "linear":
        decay = optax.linear_schedule(peak, peak * config.final_fraction, decay_steps)
    else:
        scale = float(max(1, config.warmup_steps))

        def decay(step):
            return peak * jnp.sqrt(scale / (jnp.maximum(step, 0) + scale))
    if config.warmup_steps == 0:
        return decay
    return optax.join_schedules([warmup, decay], [config.warmup_steps])


def make_optimizer(config: OptimizerConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW with the schedule."""
    transforms = []
    if config.grad_clip_norm is not None:
        transforms.append(optax.clip_by_global_norm(config.grad_clip_norm))
    transforms.append(optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                                  weight_decay=config.weight_decay))
    return optax.chain(*transforms)


def ema_decay_at(step, decay: float):
    """EMA decay with warmup, `min(decay, (1 + step) / (10 + step))` (our choice): early averages track the weights."""
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))
