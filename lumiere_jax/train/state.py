"""Train state: step, frozen and trainable parameters, optimizer state and EMA of the trainable ones.

Parameters are split by the model's trainable mask into two trees with the same nesting as the model's
(`trainable`, `frozen`). Gradients, optimizer state and EMA exist only for `trainable` -- the effect of
optax masking, plus the backward pass never computes weight gradients of frozen T2I layers.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from lumiere_jax.models.param_paths import flatten, unflatten

Params = Any


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 []: batches consumed (skipped non-finite steps included)
    trainable_params: Params
    frozen_params: Params
    opt_state: optax.OptState
    ema_params: Params  # EMA of trainable_params
    nonfinite_streak: jax.Array  # int32 []: consecutive steps skipped for a non-finite loss or gradient
    nonfinite_total: jax.Array  # int32 []: all skipped steps so far

    @property
    def params(self) -> Params:
        """Full model parameters (trainable merged with frozen)."""
        return merge_params(self.trainable_params, self.frozen_params)

    @property
    def ema_model_params(self) -> Params:
        """Full model parameters with the EMA in place of the trainable ones (for sampling)."""
        return merge_params(self.ema_params, self.frozen_params)


def split_params(params: Params, mask: Any | None) -> tuple[Params, Params]:
    """Splits `params` into (trainable, frozen) with a same-structured tree of bools (None: all trainable)."""
    if mask is None:
        return params, {}
    flat_params, flat_mask = flatten(params), flatten(mask)
    if set(flat_params) != set(flat_mask):
        raise ValueError("trainable mask does not match the parameter tree; missing or extra paths: "
                         f"{sorted(set(flat_params) ^ set(flat_mask))[:5]}")
    trainable = {path: leaf for path, leaf in flat_params.items() if flat_mask[path]}
    frozen = {path: leaf for path, leaf in flat_params.items() if not flat_mask[path]}
    if not trainable:
        raise ValueError("the trainable mask selects no parameter; nothing would train")
    return unflatten(trainable), unflatten(frozen)


def merge_params(trainable: Params, frozen: Params) -> Params:
    """Inverse of `split_params`."""
    return unflatten({**flatten(frozen), **flatten(trainable)})


def create_train_state(trainable: Params, frozen: Params, optimizer: optax.GradientTransformation,
                       use_ema: bool) -> TrainState:
    """A fresh state at step 0 (EMA starts at the initial trainable parameters)."""
    zero = jnp.zeros((), jnp.int32)
    ema = jax.tree.map(jnp.copy, trainable) if use_ema else {}
    return TrainState(step=zero, trainable_params=trainable, frozen_params=frozen,
                      opt_state=optimizer.init(trainable), ema_params=ema,
                      nonfinite_streak=zero, nonfinite_total=zero)
