"""Chaos resume: the single-process toy run killed (SIGKILL) at chosen moments, inside an asynchronous Orbax save,
between an input snapshot's files and its commit marker, and after a train step; each rerun resumes, and the
final state is bitwise the uninterrupted run's. (`benchmarks/chaos_resume.py` kills 20 times at random.)"""

import os
import re
import subprocess
import sys

import pytest
from test_pod import assert_same_tree, saved_state

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 12


def run(cli_env, model_dir, data_dir, fault=None):
    env = {**cli_env, **({"LUMIERE_FAULT": fault} if fault else {})}
    return subprocess.run(
        [sys.executable, "-m", "lumiere_jax.train", f"--gin_file={os.path.join(HERE, 'toy_run.gin')}",
         f"--gin.MODEL_DIR={model_dir}", f"--gin.SyntheticMotionConfig.data_dir={data_dir}",
         f"--gin.train.num_train_steps={STEPS}", "--gin.CheckpointConfig.save_every_steps=2"],
        env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("faults", [("async_save@4", "snapshot_commit@8", "step@11")])
def test_killed_runs_resume_to_the_uninterrupted_state(faults, tmp_path, cli_env, synthetic_tiny_dir):
    straight = str(tmp_path / "straight")
    assert run(cli_env, straight, synthetic_tiny_dir).returncode == 0
    chaos = str(tmp_path / "chaos")
    for fault in faults:
        killed = run(cli_env, chaos, synthetic_tiny_dir, fault)
        assert killed.returncode == -9, (fault, killed.stderr[-2000:])
    final = run(cli_env, chaos, synthetic_tiny_dir)
    assert final.returncode == 0, final.stderr[-3000:]
    # The last kill came right after step 11, while step 10 may still have been saving asynchronously.
    assert re.search(r"restored checkpoint at step (8|10)\b", final.stderr), final.stderr[-3000:]
    assert_same_tree(saved_state(straight, STEPS), saved_state(chaos, STEPS))
