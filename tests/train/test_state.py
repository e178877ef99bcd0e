"""Parameter split into trainable / frozen, and the optimizer state covering trainable parameters only."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lumiere_jax.models import param_paths
from lumiere_jax.train import state as state_lib

PARAMS = {"down_0_res_0": {"conv_0": {"kernel": jnp.ones((3, 3, 2, 2))}},
          "down_0_temporal_conv_0": {"temporal_conv": {"kernel": jnp.zeros((3, 2, 2)), "bias": jnp.zeros(2)}}}
MASK = {"down_0_res_0": {"conv_0": {"kernel": False}},
        "down_0_temporal_conv_0": {"temporal_conv": {"kernel": True, "bias": True}}}


def test_split_and_merge_round_trip():
    trainable, frozen = state_lib.split_params(PARAMS, MASK)
    assert set(param_paths.flatten(trainable)) == {"down_0_temporal_conv_0/temporal_conv/kernel",
                                                 "down_0_temporal_conv_0/temporal_conv/bias"}
    assert set(param_paths.flatten(frozen)) == {"down_0_res_0/conv_0/kernel"}
    merged = state_lib.merge_params(trainable, frozen)
    assert jax.tree.structure(merged) == jax.tree.structure(PARAMS)
    jax.tree.map(np.testing.assert_array_equal, merged, PARAMS)


def test_optimizer_state_and_ema_cover_trainable_parameters_only():
    trainable, frozen = state_lib.split_params(PARAMS, MASK)
    state = state_lib.create_train_state(trainable, frozen, optax.adam(1e-3), use_ema=True)
    adam_state = state.opt_state[0]
    assert jax.tree.structure(adam_state.mu) == jax.tree.structure(trainable)
    assert jax.tree.structure(state.ema_params) == jax.tree.structure(trainable)
    assert state.params["down_0_res_0"]["conv_0"]["kernel"].shape == (3, 3, 2, 2)
    assert int(state.step) == 0 and int(state.nonfinite_total) == 0


def test_mask_errors():
    with pytest.raises(ValueError, match="trainable mask does not match the parameter tree"):
        state_lib.split_params(PARAMS, {"down_0_res_0": {"conv_0": {"kernel": True}}})
    nothing = jax.tree.map(lambda _: False, PARAMS)
    with pytest.raises(ValueError, match="selects no parameter"):
        state_lib.split_params(PARAMS, nothing)
    trainable, frozen = state_lib.split_params(PARAMS, None)
    assert frozen == {} and trainable is PARAMS
