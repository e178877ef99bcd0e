"""The training loop in process, on the toy model: sharded vs single-device losses, NaN handling, TensorBoard,
input snapshots saved with the checkpoints."""

import dataclasses
import glob
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

import toy
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.stages.diffusion_config import DiffusionConfig
from lumiere_jax.train import checkpoints as checkpoints_lib
from lumiere_jax.train import loop
from lumiere_jax.train import monitor as monitor_lib
from lumiere_jax.train import optimizer as optimizer_lib

NUM_STEPS = 8
NAN_STEP_INDEX = 3  # the 4th batch is all NaN


def run(model_dir, mesh_shape, num_devices, **overrides):
    kwargs = dict(
        model_dir=model_dir, adapter=toy.toy_adapter(), num_train_steps=NUM_STEPS, global_batch_size=8,
        dataset_fn=lambda *args: toy.ToyIterator(*args, nan_at=(NAN_STEP_INDEX,)),
        optimizer=optimizer_lib.OptimizerConfig(learning_rate=3e-3, warmup_steps=2, decay="constant", ema_decay=0.9),
        checkpoint=checkpoints_lib.CheckpointConfig(save_every_steps=2, keep_last=10, async_save=True),
        diffusion=DiffusionConfig(text_dropout_rate=0.2),
        mesh=mesh_lib.MeshConfig(mesh_shape, num_devices=num_devices),
        monitor=monitor_lib.MonitorConfig(log_every_steps=1), seed=3)
    kwargs.update(overrides)
    return loop.train(**kwargs)


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("sharded"))
    monitor = monitor_lib.MonitorConfig(
        log_every_steps=1, evaluation=monitor_lib.EvalConfig(every_steps=NUM_STEPS, time_buckets=2),
        previews=monitor_lib.PreviewConfig(every_steps=NUM_STEPS, count=3, num_steps=2, guidance_weight=2.0))
    result = run(model_dir, (2, 2, 2), 8, monitor=monitor)
    return model_dir, result


@pytest.fixture(scope="module")
def single_device_run(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("single"))
    return model_dir, run(model_dir, (1, 1, 1), 1)


def test_sharded_run_matches_single_device(sharded_run, single_device_run):
    sharded, single = sharded_run[1], single_device_run[1]
    assert sharded.state.trainable_params["spatial_conv"]["kernel"].sharding.mesh.shape["fsdp"] == 2
    sharded_losses = np.array([entry["loss"] for entry in sharded.history])
    single_losses = np.array([entry["loss"] for entry in single.history])
    finite = np.arange(NUM_STEPS) != NAN_STEP_INDEX
    np.testing.assert_allclose(sharded_losses[finite], single_losses[finite], rtol=2e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=2e-5),
                 sharded.state.trainable_params, single.state.trainable_params)


def test_nan_batch_is_skipped_and_never_saved(sharded_run):
    model_dir, result = sharded_run
    skipped = [entry["skipped_nonfinite"] for entry in result.history]
    assert skipped == [1.0 if step == NAN_STEP_INDEX else 0.0 for step in range(NUM_STEPS)]
    assert np.isnan(result.history[NAN_STEP_INDEX]["loss"])
    assert int(result.state.nonfinite_total) == 1 and int(result.state.step) == NUM_STEPS
    steps = sorted(int(name) for name in os.listdir(os.path.join(model_dir, "checkpoints")) if name.isdigit())
    assert steps == [2, 4, 6, 8]
    for step in steps:
        saved = ocp.PyTreeCheckpointer().restore(os.path.join(model_dir, "checkpoints", str(step), "state"))
        for leaf in jax.tree.leaves(saved):
            assert np.all(np.isfinite(np.asarray(leaf)))


def test_consecutive_nonfinite_steps_stop_training(tmp_path):
    # Batches 2, 3, 4 (steps 3, 4, 5) are NaN: the third in a row stops the run at step 5.
    with pytest.raises(loop.NonFiniteLossError, match="stopping at step 5: 3 consecutive steps had a non-finite"):
        run(str(tmp_path / "nan"), (1, 1, 1), 1,
            monitor=monitor_lib.MonitorConfig(log_every_steps=1, max_consecutive_nonfinite=3),
            dataset_fn=lambda *args: toy.ToyIterator(*args, nan_at=range(2, 100)))
    checkpoints_dir = tmp_path / "nan" / "checkpoints"
    saved = sorted(int(name) for name in os.listdir(checkpoints_dir) if name.isdigit())
    assert saved == [2, 4]
    step_4 = ocp.PyTreeCheckpointer().restore(str(checkpoints_dir / "4" / "state"))
    step_2 = ocp.PyTreeCheckpointer().restore(str(checkpoints_dir / "2" / "state"))
    assert int(step_4["nonfinite_streak"]) == 2
    # The skipped steps changed no parameter.
    jax.tree.map(np.testing.assert_array_equal, step_4["trainable_params"], step_2["trainable_params"])


def test_tensorboard_events_have_the_scalars(sharded_run):
    model_dir, _ = sharded_run
    (events,) = glob.glob(os.path.join(model_dir, "events.out.tfevents.*"))
    accumulator = event_accumulator.EventAccumulator(events, size_guidance={"tensors": 0, "images": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    scalars = {tag: [event.step for event in accumulator.Tensors(tag)] for tag in tags["tensors"]}
    for name in ("loss", "learning_rate", "grad_norm", "steps_per_sec", "examples_per_sec", "tflops_per_device"):
        assert scalars[f"train/{name}"] == list(range(1, NUM_STEPS + 1)), name
    lr = [float(tensor_util.make_ndarray(event.tensor_proto)) for event in accumulator.Tensors("train/learning_rate")]
    np.testing.assert_allclose(lr[:3], [0.0, 1.5e-3, 3e-3], rtol=1e-6)  # warmup over 2 steps, then constant
    for tag in ("eval/loss", "eval/loss_t0.00-0.50", "eval/loss_t0.50-1.00"):
        assert scalars[tag] == [NUM_STEPS]
    assert "samples" in tags["images"] or any("samples" in tag for tag in tags["tensors"])
    videos = sorted(glob.glob(os.path.join(model_dir, "samples", "*.mp4")))
    assert len(videos) == 3 and all(os.path.getsize(path) > 0 for path in videos)


class SnapshotToyIterator(toy.ToyIterator):
    """A ToyIterator with input snapshots (one JSON file per step) that logs how it resumed."""

    def __init__(self, *args, log, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = log

    def save_snapshot(self, directory, pending=()):
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, f"shard_{self.shard}.json")
        with open(path, "w") as file:
            json.dump({"index": self.index - len(pending)}, file)
        return path

    def set_state(self, state, snapshot_dir=None, require_commit=True):
        path = os.path.join(snapshot_dir or "", f"shard_{self.shard}.json")
        if snapshot_dir is not None and os.path.exists(path):
            with open(path) as file:
                self.index = json.load(file)["index"]
            self.log.append(("snapshot", snapshot_dir, self.index))
        else:
            super().set_state(state)
            self.log.append(("skip", snapshot_dir, self.index))


def test_checkpoints_carry_input_snapshots(tmp_path):
    model_dir, log = str(tmp_path / "run"), []
    checkpoint = checkpoints_lib.CheckpointConfig(save_every_steps=1, keep_last=2, async_save=True)

    def train(num_steps, **overrides):
        run(model_dir, (1, 1, 1), 1, num_train_steps=num_steps,
            monitor=monitor_lib.MonitorConfig(log_every_steps=num_steps),
            checkpoint=dataclasses.replace(checkpoint, **overrides),
            dataset_fn=lambda *args: SnapshotToyIterator(*args, log=log))

    def snapshots():
        saved = {}
        for path in glob.glob(os.path.join(model_dir, "checkpoints", "*", "data", "shard_0.json")):
            with open(path) as file:
                saved[int(path.split(os.sep)[-3])] = json.load(file)
        return saved

    train(4)
    # Saved at the consumed position (the loop had prefetched two more batches), kept like the checkpoints.
    assert snapshots() == {3: {"index": 3}, 4: {"index": 4}}
    train(6)
    assert log == [("snapshot", os.path.join(model_dir, "checkpoints", "4", "data"), 4)]
    assert snapshots() == {5: {"index": 5}, 6: {"index": 6}}
    train(8, data_snapshots=False)  # switched off: resumes by skipping, writes none
    # Snapshots go with their steps: steps 7 and 8 are kept, without snapshots.
    assert log[1:] == [("skip", None, 6)] and snapshots() == {}


def test_batch_not_divisible_by_data_axes(tmp_path):
    with pytest.raises(ValueError, match="global batch size 6 is not divisible by the data-parallel mesh size 4"):
        run(str(tmp_path / "bad"), (2, 2, 2), 8, global_batch_size=6)
