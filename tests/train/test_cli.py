"""The command line: exact resumption after SIGKILL, SIGTERM saves and exits 0, clear errors for bad input.

Runs use the toy model on the real synthetic_motion data through `python -m lumiere_jax.train`.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import gin
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from lumiere_jax.train import cli

TOY_GIN = os.path.join(os.path.dirname(__file__), "toy_run.gin")


def command(model_dir, data_dir, *extra):
    return [sys.executable, "-m", "lumiere_jax.train", f"--gin_file={TOY_GIN}", f"--gin.MODEL_DIR={model_dir}",
            f"--gin.SyntheticMotionConfig.data_dir={data_dir}", *extra]


def run_cli(env, *args, check=True):
    result = subprocess.run(command(*args), env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stderr[-4000:]}")
    return result


def checkpoint_steps(model_dir):
    directory = os.path.join(model_dir, "checkpoints")
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit()) if os.path.isdir(directory) else []


def restore(model_dir, step):
    return ocp.PyTreeCheckpointer().restore(os.path.join(model_dir, "checkpoints", str(step), "state"))


def wait_for(predicate, process, timeout=300):
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"process ended early with {process.returncode}: {process.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, cli_env, synthetic_tiny_dir):
    model_dir = str(tmp_path_factory.mktemp("straight"))
    result = run_cli(cli_env, model_dir, synthetic_tiny_dir)
    return model_dir, result


def test_resumption_after_sigkill_is_bitwise_exact(straight_run, tmp_path, cli_env, synthetic_tiny_dir):
    straight_dir, straight = straight_run
    assert checkpoint_steps(straight_dir) == [4, 8]
    assert os.path.isfile(os.path.join(straight_dir, "operative_config.gin"))
    assert "train.num_train_steps = 8" in open(os.path.join(straight_dir, "operative_config.gin")).read()

    # The learning rate is constant after warmup, so a longer run does the same first steps; it is killed
    # once step 4 is saved, then everything written after step 4 is removed (as if killed right there).
    killed_dir = str(tmp_path / "killed")
    process = subprocess.Popen(command(killed_dir, synthetic_tiny_dir, "--gin.train.num_train_steps=100000"),
                               env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: 4 in checkpoint_steps(killed_dir), process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    for name in os.listdir(os.path.join(killed_dir, "checkpoints")):
        if not name.isdigit() or int(name) > 4:
            shutil.rmtree(os.path.join(killed_dir, "checkpoints", name))

    resumed = run_cli(cli_env, killed_dir, synthetic_tiny_dir)
    assert "restored checkpoint at step 4" in resumed.stderr
    assert "from snapshot" in resumed.stderr  # the data position came from the saved tf.data iterator
    assert checkpoint_steps(killed_dir) == [4, 8]
    expected, actual = restore(straight_dir, 8), restore(killed_dir, 8)
    assert jax.tree.structure(expected) == jax.tree.structure(actual)
    jax.tree.map(np.testing.assert_array_equal, expected, actual)


def test_sigterm_saves_a_checkpoint_and_exits_zero(tmp_path, cli_env, synthetic_tiny_dir):
    model_dir = str(tmp_path / "preempted")
    process = subprocess.Popen(
        command(model_dir, synthetic_tiny_dir, "--gin.train.num_train_steps=100000",
                "--gin.CheckpointConfig.save_every_steps=1000"),
        env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in process.stderr:
        seen.append(line)
        if "step 3/100000" in line:
            break
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=120)
    log = "".join(seen) + rest
    assert process.returncode == 0, log[-3000:]
    (step,) = checkpoint_steps(model_dir)
    assert step >= 3 and f"preempted: saved step {step}" in log
    saved = restore(model_dir, step)
    assert int(saved["step"]) == step


def test_checkpoint_of_a_different_model_fails_clearly(straight_run, tmp_path, cli_env, synthetic_tiny_dir):
    model_dir = str(tmp_path / "other")
    shutil.copytree(straight_run[0], model_dir)
    result = run_cli(cli_env, model_dir, synthetic_tiny_dir, "--gin.toy_adapter.features=16", check=False)
    assert result.returncode != 0
    assert "was written by a different model" in result.stderr
    assert "Use a new MODEL_DIR" in result.stderr


@pytest.fixture
def clean_gin():
    yield
    gin.clear_config(clear_constants=True)


def test_missing_model_dir_is_a_usage_error(clean_gin, capsys):
    assert cli.main(["--gin_file=runs/pretrain_t2i.gin", "--gin_file=runs/cpu_tiny.gin"]) == 2
    assert "MODEL_DIR is required: pass --gin.MODEL_DIR=" in capsys.readouterr().err


def test_unknown_gin_binding_is_a_usage_error(clean_gin, capsys, tmp_path):
    code = cli.main(["--gin_file=runs/pretrain_t2i.gin", f"--gin.MODEL_DIR={tmp_path}",
                     "--gin.train.num_trian_steps=3"])
    assert code == 2
    assert "doesn't have a parameter named 'num_trian_steps'" in capsys.readouterr().err


def test_required_stage_checkpoint_is_a_usage_error(clean_gin, capsys, tmp_path):
    assert cli.main(["--gin_file=runs/train_stunet.gin", f"--gin.MODEL_DIR={tmp_path}"]) == 2
    assert "T2I_CHECKPOINT" in capsys.readouterr().err
