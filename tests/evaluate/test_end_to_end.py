"""The evaluation command on two real tiny STUNet checkpoints, sampled by the real batch sampling job with the
shipped gin files (sample/base.gin + sample/cpu_tiny.gin + evaluate/synthetic.gin + evaluate/sampling.gin)."""

import json
import os
import sys

import gin
import numpy as np
import optax
import pod_harness
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from lumiere_jax import storage
from lumiere_jax.evaluate import __main__ as evaluate_main
from lumiere_jax.evaluate import job
from lumiere_jax.stages import checkpoint_layout
from lumiere_jax.train import checkpoints as checkpoints_lib
from lumiere_jax.train import state as state_lib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sample"))
import tiny_setup  # tiny real models shared with the sampling tests


def write_checkpoint(model_dir, adapter, params, step):
    """A training checkpoint as the trainer writes it (all parameters trainable)."""
    state = state_lib.create_train_state(params, {}, optax.sgd(0.1), use_ema=True)
    checkpointer = checkpoints_lib.Checkpointer(model_dir, checkpoints_lib.CheckpointConfig(async_save=False),
                                                adapter.name, checkpoint_layout.model_signature(params))
    checkpointer.save(step, state, {"index": 0}, params_finite=True)
    checkpointer.close()


def test_two_tiny_checkpoints_are_sampled_scored_logged_and_not_recomputed(tmp_path, capsys):
    config = tiny_setup.base_config(in_channels=3)
    adapter = tiny_setup.make_adapter("stunet", config)
    model_dir = str(tmp_path / "run")
    for step, seed in ((10, 0), (20, 1)):
        write_checkpoint(model_dir, adapter, tiny_setup.random_params(adapter, seed), step)
    lines = ["include 'sample/base.gin'", "include 'sample/cpu_tiny.gin'", "include 'evaluate/synthetic.gin'",
             "include 'evaluate/sampling.gin'", "BASE_STAGE = 'stunet'", "TEXT_LENGTH = 8",
             "SamplingConfig.num_steps = 2", "synthetic_prompts.num_prompts = 2", "sample_videos.batch_size = 2",
             *tiny_setup.unet_bindings("base", config)]
    gin_file = tmp_path / "evaluate.gin"
    gin_file.write_text("\n".join(lines) + "\n")
    argv = [f"--gin_file={gin_file}", f"--gin.MODEL_DIR={model_dir}"]
    try:
        assert evaluate_main.main(argv) == 0
        first_output = json.loads(capsys.readouterr().out)
        eval_dir = os.path.join(model_dir, "eval", "synthetic")
        before = {step: open(job.metrics_path(eval_dir, step)).read() for step in (10, 20)}
        gin.clear_config()
        assert evaluate_main.main(argv) == 0  # a rerun finds both checkpoints finished
        assert json.loads(capsys.readouterr().out) == {"evaluated": {}}
    finally:
        gin.clear_config()
    assert sorted(first_output["evaluated"]) == ["10", "20"]
    results = job.read_results(model_dir, "synthetic")
    for step in (10, 20):
        assert open(job.metrics_path(eval_dir, step)).read() == before[step]
        assert results[step]["num_videos"] == 2
        assert results[step]["video_shape"] == [tiny_setup.NUM_FRAMES, tiny_setup.SIZE, tiny_setup.SIZE, 3]
        assert 0.0 <= results[step]["metrics"]["synthetic/temporal_consistency"] <= 1.0
        sidecar = json.load(open(os.path.join(eval_dir, "videos", f"{step:08d}", "000001.json")))
        assert sidecar["seed"] == 1 and sidecar["base_checkpoint"]["step"] == step
    accumulator = event_accumulator.EventAccumulator(eval_dir, size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    events = accumulator.Tensors("synthetic/temporal_consistency")
    assert sorted(event.step for event in events) == [10, 20]
    for event in events:
        value = float(tf.make_ndarray(event.tensor_proto))
        assert np.isclose(value, results[event.step]["metrics"]["synthetic/temporal_consistency"])


def test_two_hosts_evaluate_a_gcs_run_like_one_process(tmp_path, gcs_emulator):
    """The evaluation command on a pod of 2 processes (tests/pod_harness.py), run directory on a GCS bucket: both
    hosts generate together, process 0 writes, and the scores equal those of one process on a local copy."""
    config = tiny_setup.base_config(in_channels=3)
    adapter = tiny_setup.make_adapter("stunet", config)
    local_dir = str(tmp_path / "run")
    write_checkpoint(local_dir, adapter, tiny_setup.random_params(adapter, 0), 10)
    bucket_dir = gcs_emulator.new_bucket() + "/run"
    storage.copy_tree(local_dir, bucket_dir)
    lines = ["include 'sample/base.gin'", "include 'sample/cpu_tiny.gin'", "include 'evaluate/synthetic.gin'",
             "include 'evaluate/sampling.gin'", "BASE_STAGE = 'stunet'", "TEXT_LENGTH = 8",
             "SamplingConfig.num_steps = 2", "synthetic_prompts.num_prompts = 8", "sample_videos.batch_size = 8",
             *tiny_setup.unet_bindings("base", config)]
    gin_file = tmp_path / "evaluate.gin"
    gin_file.write_text("\n".join(lines) + "\n")
    env = {**gcs_emulator.env, "PYTHONPATH": pod_harness.REPO}
    pod = pod_harness.launch("lumiere_jax.evaluate", [f"--gin_file={gin_file}", f"--gin.MODEL_DIR={bucket_dir}",
                                                      "--compilation_cache_dir="], env, str(tmp_path / "logs"))
    assert pod.wait(timeout=300) == [0, 0], pod.log(0)[-3000:] + pod.log(1)[-3000:]
    try:
        assert evaluate_main.main([f"--gin_file={gin_file}", f"--gin.MODEL_DIR={local_dir}",
                                   "--compilation_cache_dir="]) == 0
    finally:
        gin.clear_config()
    on_pod, single = job.read_results(bucket_dir, "synthetic"), job.read_results(local_dir, "synthetic")
    assert sorted(on_pod) == [10] and on_pod[10]["num_videos"] == 8
    assert on_pod[10]["metrics"] == single[10]["metrics"]
