"""Checkpoints: retention (input snapshots included), restore onto another mesh, corrupted-latest fallback, model
mismatch, init-from."""

import dataclasses
import glob
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.stages import checkpoint_layout
from lumiere_jax.train import checkpoints as checkpoints_lib
from lumiere_jax.train import state as state_lib
from lumiere_jax.train import step as step_lib

TX = optax.adam(1e-3)


def params_at(step):
    return {"spatial_conv": {"kernel": jnp.full((3, 3, 3, 4), float(step))},
            "temporal_mix": jnp.arange(4.0) + step}


def make_state(step, mesh):
    trainable, frozen = state_lib.split_params(
        params_at(step), {"spatial_conv": {"kernel": False}, "temporal_mix": True})
    state = state_lib.create_train_state(trainable, frozen, TX, use_ema=True)
    state = state.replace(step=jnp.asarray(step, jnp.int32),
                          ema_params=jax.tree.map(lambda x: x + 0.5, state.ema_params))
    fsdp = NamedSharding(mesh, PartitionSpec("fsdp"))
    return jax.tree.map(lambda x: jax.device_put(x, fsdp if x.ndim and x.shape[0] % 2 == 0 else
                                                  NamedSharding(mesh, PartitionSpec())), state)


def abstract_on(mesh, state):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, PartitionSpec())),
                        state)


def signature():
    return checkpoint_layout.model_signature(params_at(0))


def write_data_snapshot(directory):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "shard_00000_of_00001"), "w") as file:
        file.write("this host's snapshot")


def step_names(directory):
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """Steps 1..5 saved on an 8-device mesh, keeping the last 2 and every 2nd, each with an input snapshot."""
    model_dir = str(tmp_path_factory.mktemp("ckpt"))
    mesh = mesh_lib.make_mesh((2, 2, 2))
    config = checkpoints_lib.CheckpointConfig(save_every_steps=1, keep_last=2, keep_every=2)
    checkpointer = checkpoints_lib.Checkpointer(model_dir, config, "toy", signature())
    for step in range(1, 6):
        checkpointer.save(step, make_state(step, mesh), {"index": step}, params_finite=True,
                          save_data_snapshot=write_data_snapshot)
    checkpointer.close()
    return model_dir, config


def test_keeps_the_last_k_and_every_mth(saved_run):
    model_dir, _ = saved_run
    assert step_names(os.path.join(model_dir, "checkpoints")) == [2, 4, 5]
    # Input snapshots are an item of each step: one commit, one retention rule.
    for step in (2, 4, 5):
        with open(os.path.join(model_dir, "checkpoints", str(step), "data", "shard_00000_of_00001")) as file:
            assert file.read() == "this host's snapshot"
    assert not os.path.exists(os.path.join(model_dir, "data_snapshots"))


def test_data_snapshot_failures_only_warn_and_can_be_switched_off(tmp_path, caplog):
    mesh = mesh_lib.make_mesh((2, 2, 2))

    def failing(directory):
        raise OSError(f"disk full writing {directory}")
    checkpointer = checkpoints_lib.Checkpointer(
        str(tmp_path / "failing"), checkpoints_lib.CheckpointConfig(async_save=False), "toy", signature())
    with caplog.at_level(logging.WARNING):
        checkpointer.save(1, make_state(1, mesh), {"index": 1}, params_finite=True, save_data_snapshot=failing)
    checkpointer.close()
    assert checkpointer.steps() == [1]
    assert "could not save the input snapshot of step 1 (OSError: disk full" in caplog.text

    off = checkpoints_lib.Checkpointer(str(tmp_path / "off"), checkpoints_lib.CheckpointConfig(
        async_save=False, data_snapshots=False), "toy", signature())
    off.save(1, make_state(1, mesh), {"index": 1}, params_finite=True, save_data_snapshot=write_data_snapshot)
    off.close()
    assert off.steps() == [1] and not os.path.exists(tmp_path / "off" / "data_snapshots")


def test_restores_latest_onto_a_different_mesh(saved_run):
    model_dir, config = saved_run
    one_device = mesh_lib.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    checkpointer = checkpoints_lib.Checkpointer(model_dir, config, "toy", signature())
    state, meta = checkpointer.restore_latest(abstract_on(one_device, make_state(0, one_device)))
    checkpointer.close()
    assert int(state.step) == 5 and meta["data_state"] == {"index": 5}
    merged = state.params
    np.testing.assert_array_equal(merged["spatial_conv"]["kernel"], np.full((3, 3, 3, 4), 5.0))
    np.testing.assert_array_equal(state.ema_params["temporal_mix"], np.arange(4.0) + 5.5)
    assert state.trainable_params["temporal_mix"].sharding.mesh.devices.size == 1


def test_truncated_latest_falls_back_to_previous(saved_run, tmp_path, caplog):
    model_dir = str(tmp_path / "copy")
    shutil.copytree(saved_run[0], model_dir)
    for path in glob.glob(os.path.join(model_dir, "checkpoints", "5", "state", "d", "*")):
        with open(path, "r+b") as file:
            file.truncate(os.path.getsize(path) // 3)
    mesh = mesh_lib.make_mesh((2, 2, 2))
    checkpointer = checkpoints_lib.Checkpointer(model_dir, saved_run[1], "toy", signature())
    with caplog.at_level(logging.WARNING):
        state, meta = checkpointer.restore_latest(abstract_on(mesh, make_state(0, mesh)))
    checkpointer.close()
    assert int(state.step) == 4 and meta["data_state"] == {"index": 4}
    assert "checkpoint at step 5 is unusable (incomplete or corrupted state" in caplog.text
    # Set aside (kept, with the reason), not deleted; the step number is free again for the next save.
    (aside,) = glob.glob(os.path.join(model_dir, "set_aside", "5-*"))
    assert "corrupted" in open(os.path.join(aside, "REASON.txt")).read()
    assert os.path.isdir(os.path.join(aside, "state")) and 5 not in step_names(os.path.join(model_dir, "checkpoints"))
    checkpointer = checkpoints_lib.Checkpointer(model_dir, saved_run[1], "toy", signature())
    checkpointer.save(5, make_state(5, mesh), {"index": 5}, params_finite=True)
    checkpointer.close()
    assert 5 in step_names(os.path.join(model_dir, "checkpoints"))


def test_checkpoint_of_a_different_model_is_an_error(saved_run):
    model_dir, config = saved_run
    other = checkpoint_layout.model_signature({**params_at(0), "temporal_mix": jnp.zeros(5)})
    checkpointer = checkpoints_lib.Checkpointer(model_dir, config, "toy", other)
    mesh = mesh_lib.make_mesh((2, 2, 2))
    with pytest.raises(ValueError, match=r"written by a different model .*temporal_mix: shape \[4\] != \[5\]"):
        checkpointer.restore_latest(abstract_on(mesh, make_state(0, mesh)))
    checkpointer.close()


def test_refuses_to_save_nonfinite_parameters(tmp_path):
    mesh = mesh_lib.make_mesh((2, 2, 2))
    checkpointer = checkpoints_lib.Checkpointer(str(tmp_path), checkpoints_lib.CheckpointConfig(), "toy", signature())
    state = make_state(1, mesh)
    assert bool(step_lib.all_finite((state.trainable_params, state.ema_params)))
    state = state.replace(trainable_params={"temporal_mix": state.trainable_params["temporal_mix"] * jnp.nan})
    finite = bool(step_lib.all_finite((state.trainable_params, state.ema_params)))
    assert not finite
    with pytest.raises(RuntimeError, match="contain NaN or Inf"):
        checkpointer.save(1, state, {}, params_finite=finite)
    checkpointer.close()
    assert checkpointer.steps() == []


def test_assignment_map_loads_spatial_pads_channels_and_skips_temporal(saved_run):
    model_dir, _ = saved_run
    mesh = mesh_lib.make_mesh((2, 2, 2))
    replicated = NamedSharding(mesh, PartitionSpec())
    target = {
        "input_conv/kernel": jax.ShapeDtypeStruct((3, 3, 7, 4), jnp.float32, sharding=replicated),
        "temporal_mix": jax.ShapeDtypeStruct((4,), jnp.float32, sharding=replicated),
    }
    config = checkpoints_lib.CheckpointConfig(
        init_from=model_dir, assignment_map=((".*temporal.*", None), ("input_conv/kernel", "spatial_conv/kernel")),
        init_pad_input_channels=True)
    loaded = checkpoints_lib.load_init_params(config, target, frozen_paths={"input_conv/kernel"})
    assert set(loaded) == {"input_conv/kernel"}  # temporal keeps its fresh initialisation
    kernel = np.asarray(loaded["input_conv/kernel"])
    np.testing.assert_array_equal(kernel[:, :, :3], np.full((3, 3, 3, 4), 5.0))  # latest step, frozen (no EMA)
    np.testing.assert_array_equal(kernel[:, :, 3:], 0.0)  # new input channels start at zero (paper 4.2)

    # An SR source: its last input channel is low-res input; the new channels go before it, as the model
    # concatenates [x, C, M, low-res].
    loaded = checkpoints_lib.load_init_params(config, target, {"input_conv/kernel"}, low_res_channels=1)
    kernel = np.asarray(loaded["input_conv/kernel"])
    np.testing.assert_array_equal(kernel[:, :, [0, 1, 6]], np.full((3, 3, 3, 4), 5.0))
    np.testing.assert_array_equal(kernel[:, :, 2:6], 0.0)

    # Only the input conv widens: another kernel of fewer input channels is a shape mismatch.
    other = {"spatial_conv/kernel": target["input_conv/kernel"]}
    with pytest.raises(ValueError, match=r"spatial_conv/kernel: checkpoint shape \(3, 3, 3, 4\) != model shape"):
        checkpoints_lib.load_init_params(dataclasses.replace(config, assignment_map=()), other, set())

    ema_config = checkpoints_lib.CheckpointConfig(init_from=os.path.join(model_dir, "checkpoints", "4"))
    loaded = checkpoints_lib.load_init_params(ema_config, {"temporal_mix": target["temporal_mix"]}, set())
    np.testing.assert_array_equal(loaded["temporal_mix"], np.arange(4.0) + 4.5)  # step 4's EMA weights


def test_assignment_map_errors_name_the_problem(saved_run):
    model_dir, _ = saved_run
    replicated = NamedSharding(mesh_lib.make_mesh((2, 2, 2)), PartitionSpec())
    target = {"spatial_conv/kernel": jax.ShapeDtypeStruct((3, 3, 7, 4), jnp.float32, sharding=replicated),
              "new_layer/kernel": jax.ShapeDtypeStruct((2,), jnp.float32, sharding=replicated)}
    config = checkpoints_lib.CheckpointConfig(init_from=model_dir)
    with pytest.raises(ValueError, match=r"2 problems.*checkpoint shape \(3, 3, 3, 4\) != model shape"):
        checkpoints_lib.load_init_params(config, target, frozen_paths={"spatial_conv/kernel", "new_layer/kernel"})
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        checkpoints_lib.load_init_params(checkpoints_lib.CheckpointConfig(init_from=model_dir + "_missing"), {}, set())


def test_map_source_path_uses_first_matching_rule():
    rules = ((r"encoder/(.*)", r"t2i/\1"), (".*temporal.*", None))
    assert checkpoints_lib.map_source_path("encoder/conv/kernel", rules) == "t2i/conv/kernel"
    assert checkpoints_lib.map_source_path("down_0_temporal_conv_0/kernel", rules) is None
    assert checkpoints_lib.map_source_path("output_conv/kernel", rules) == "output_conv/kernel"
