"""A pod on one machine (tests/pod_harness.py): 2 processes x 4 fake CPU devices, one 8-device mesh, training
the toy model from the command line into a gs:// MODEL_DIR on the GCS emulator."""

import os
import re
import signal

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import pod_harness
from lumiere_jax import storage

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def pod_env(gcs_emulator, tmp_path_factory):
    return {**gcs_emulator.env, "PYTHONPATH": os.pathsep.join([HERE, pod_harness.REPO]),
            "DATA_DIR": str(tmp_path_factory.mktemp("pod_tfds")),
            "CACHE_DIR": str(tmp_path_factory.mktemp("pod_jax_cache"))}


def start_training(pod_env, model_dir, log_dir, num_train_steps, *overrides, fault=None):
    env = {**pod_env, **({"LUMIERE_FAULT": fault} if fault else {})}
    return pod_harness.launch("lumiere_jax.train", [
        f"--gin_file={os.path.join(HERE, 'toy_run.gin')}", f"--gin.MODEL_DIR={model_dir}",
        f"--gin.SyntheticMotionConfig.data_dir={pod_env['DATA_DIR']}", f"--gin.train.num_train_steps={num_train_steps}",
        "--gin.MeshConfig.shape=(2, 4, 1)", "--gin.train.global_batch_size=8",
        f"--compilation_cache_dir={pod_env['CACHE_DIR']}", *overrides], env, str(log_dir))


def train(pod_env, model_dir, log_dir, num_train_steps, *overrides):
    pod = start_training(pod_env, model_dir, log_dir, num_train_steps, *overrides)
    assert pod.wait(timeout=240) == [0, 0], pod.log(0)[-3000:] + pod.log(1)[-3000:]
    return pod


def saved_state(model_dir, step):
    """A saved train state as numpy arrays (read without shardings: the test process has no pod)."""
    path = storage.join(model_dir, "checkpoints", str(step), "state")
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))


def assert_same_tree(first, second):
    leaves_first, leaves_second = jax.tree.leaves_with_path(first), jax.tree.leaves_with_path(second)
    assert [path for path, _ in leaves_first] == [path for path, _ in leaves_second]
    for (path, a), (_, b) in zip(leaves_first, leaves_second):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def test_killed_host_fails_the_other_and_the_rerun_resumes_bitwise(pod_env, gcs_emulator, tmp_path):
    bucket = gcs_emulator.new_bucket()
    sync = "--gin.CheckpointConfig.async_save=False"  # step 4 is committed before the kill at step 6
    train(pod_env, f"{bucket}/straight", tmp_path / "straight", 12, sync)

    killed = start_training(pod_env, f"{bucket}/killed", tmp_path / "killed", 12, sync, fault="step@6@1")
    codes = killed.wait(timeout=90)  # bounded: the survivor's heartbeat timeout is 10 s
    assert codes[1] == -signal.SIGKILL and codes[0] != 0, codes
    assert "heartbeat timeout" in killed.log(0), killed.log(0)[-2000:]

    rerun = train(pod_env, f"{bucket}/killed", tmp_path / "rerun", 12, sync)
    for index in range(2):
        log = rerun.log(index)
        assert "restored checkpoint at step 4" in log
        # Each host resumed its own input shard from the step's data item.
        snapshot = f"{bucket}/killed/checkpoints/4/data/shard_0000{index}_of_00002"
        assert f"input pipeline resumed at step 4 from snapshot {snapshot}" in log
    assert_same_tree(saved_state(f"{bucket}/straight", 12), saved_state(f"{bucket}/killed", 12))
    objects = gcs_emulator.objects(bucket, "killed/")
    expected = {"killed/config.gin", "killed/operative_config.gin", "killed/checkpoints/12/commit_success.txt"}
    assert expected <= set(objects)
    assert any(name.startswith("killed/events.out.tfevents") for name in objects)
    assert not os.path.exists(os.path.join(pod_harness.REPO, "gs:"))


def test_sigterm_to_one_host_saves_the_same_step_on_both_and_a_bad_step_is_set_aside(pod_env, gcs_emulator, tmp_path):
    bucket = gcs_emulator.new_bucket()
    model_dir = f"{bucket}/run"
    pod = start_training(pod_env, model_dir, tmp_path / "preempted", 100000,
                         "--gin.CheckpointConfig.save_every_steps=5")
    pod.wait_for_line(1, "step 12/", timeout=180)
    pod.signal(1, signal.SIGTERM)
    assert pod.wait(timeout=60) == [0, 0], pod.log(0)[-2000:] + pod.log(1)[-2000:]
    saved = [re.findall(r"preempted: saved step (\d+)", pod.log(index)) for index in range(2)]
    assert saved[0] == saved[1] and len(saved[0]) == 1, saved
    step = int(saved[0][0])
    assert f"run/checkpoints/{step}/commit_success.txt" in gcs_emulator.objects(bucket, "run/")

    # The newest step loses its array data files (the toy's small arrays live inline in the merged OCDBT index
    # under state/d/, not in the per-process shards): both hosts fall back to the same earlier step.
    client = gcs_emulator.client().bucket(bucket.removeprefix("gs://"))
    shard = [blob for blob in client.list_blobs(prefix=f"run/checkpoints/{step}/state/d/")]
    assert shard
    for blob in shard:
        blob.delete()
    rerun = train(pod_env, model_dir, tmp_path / "rerun", step + 2, "--gin.CheckpointConfig.save_every_steps=1")
    restored = [re.findall(r"restored checkpoint at step (\d+)", rerun.log(index)) for index in range(2)]
    assert restored[0] == restored[1] and int(restored[0][0]) < step, restored
    assert all(f"checkpoint at step {step} is unusable" in rerun.log(index) for index in range(2))
    aside = gcs_emulator.objects(bucket, "run/set_aside/")
    assert any(name.endswith("REASON.txt") for name in aside) and any(f"set_aside/{step}-" in name for name in aside)
    # Training went past the bad step, and saved its number again without colliding with the old files.
    objects = gcs_emulator.objects(bucket, "run/checkpoints/")
    assert {f"run/checkpoints/{s}/commit_success.txt" for s in (step, step + 1, step + 2)} <= set(objects)
