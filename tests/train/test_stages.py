"""Each of the four stages from the command line on synthetic_motion, with the real U-Net and T5 (tiny).

t2i -> stunet (inflated from the t2i checkpoint) -> conditional (from the stunet checkpoint); image sr -> ssr
(inflated from the sr checkpoint).
"""

import os
import re
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from lumiere_jax.models import param_paths

MICRO = os.path.join(os.path.dirname(__file__), "micro_stage.gin")
MICRO_VIDEO = os.path.join(os.path.dirname(__file__), "micro_video.gin")
STEP_LINE = re.compile(r"step (\d+)/\d+ \(\d+%\) loss ([0-9.]+|nan)")


@pytest.fixture(scope="module")
def stage_env(cli_env):
    # Stage runs are dominated by per-stage compiles: XLA's default optimisation level (fast steps) with the
    # classic threefry generator (see conftest.fast_random_compiles).
    return {**cli_env, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_THREEFRY_PARTITIONABLE": "0"}


def train_stage(env, data_dir, model_dir, run_file, *overrides):
    image_runs = ("pretrain_t2i.gin", "pretrain_sr.gin")
    micro = [f"--gin_file={MICRO}"] + ([] if run_file in image_runs else [f"--gin_file={MICRO_VIDEO}"])
    result = subprocess.run(
        [sys.executable, "-m", "lumiere_jax.train", f"--gin_file=runs/{run_file}", "--gin_file=runs/cpu_tiny.gin",
         *micro, f"--gin.MODEL_DIR={model_dir}", f"--gin.SyntheticMotionConfig.data_dir={data_dir}", *overrides],
        env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    losses = {int(step): float(loss) for step, loss in STEP_LINE.findall(result.stderr)}
    return np.array([losses[step] for step in sorted(losses)]), result.stderr


def saved_state(model_dir, step=24):
    return ocp.PyTreeCheckpointer().restore(os.path.join(model_dir, "checkpoints", str(step), "state"))


def assert_loss_goes_down(losses):
    assert len(losses) == 24 and np.all(np.isfinite(losses))
    assert losses[-8:].mean() < losses[:8].mean(), losses


def assert_learns_against_frozen_run(losses, frozen_losses):
    """Paired test for the video stages, whose step losses vary more across batches than 24 steps of
    temporal-layer training move them: a run with learning rate 0 sees the same batches, noise and t (the
    step keys do not depend on the parameters), so the differences isolate what training changed."""
    assert len(losses) == len(frozen_losses) == 24 and np.all(np.isfinite(losses))
    assert losses[0] == frozen_losses[0]  # same first batch and noise, parameters not yet updated
    assert (losses[-8:] - frozen_losses[-8:]).mean() < 0, (losses, frozen_losses)


@pytest.fixture(scope="module")
def t2i_run(tmp_path_factory, stage_env, synthetic_tiny_dir):
    model_dir = str(tmp_path_factory.mktemp("t2i"))
    return (model_dir, *train_stage(stage_env, synthetic_tiny_dir, model_dir, "pretrain_t2i.gin"))


@pytest.fixture(scope="module")
def stunet_run(tmp_path_factory, stage_env, synthetic_tiny_dir, t2i_run):
    model_dir = str(tmp_path_factory.mktemp("stunet"))
    return (model_dir, *train_stage(stage_env, synthetic_tiny_dir, model_dir, "train_stunet.gin",
                                    f"--gin.T2I_CHECKPOINT={t2i_run[0]}"))


def frozen_losses(env, data_dir, model_dir, run_file, *overrides):
    """Step losses of the same run with learning rate 0 (the paired baseline)."""
    return train_stage(env, data_dir, model_dir, run_file, *overrides, "--gin.OptimizerConfig.learning_rate=0.0")[0]


def test_pretrain_t2i(t2i_run):
    assert_loss_goes_down(t2i_run[1])


def test_train_stunet_keeps_t2i_weights_bitwise(tmp_path, stage_env, synthetic_tiny_dir, t2i_run, stunet_run):
    baseline = frozen_losses(stage_env, synthetic_tiny_dir, str(tmp_path / "frozen"), "train_stunet.gin",
                             f"--gin.T2I_CHECKPOINT={t2i_run[0]}")
    assert_learns_against_frozen_run(stunet_run[1], baseline)
    t2i, stunet = saved_state(t2i_run[0]), saved_state(stunet_run[0])
    t2i_weights = param_paths.flatten(t2i["ema_params"])  # the T2I run trains everything; EMA is what loads
    frozen = param_paths.flatten(stunet["frozen_params"])
    trainable = param_paths.flatten(stunet["trainable_params"])
    assert set(frozen) == set(t2i_weights)
    assert trainable and all("temporal" in path for path in trainable)
    for path, value in t2i_weights.items():
        np.testing.assert_array_equal(frozen[path], value, err_msg=path)


def test_finetune_conditional(tmp_path, stage_env, synthetic_tiny_dir, stunet_run):
    model_dir = str(tmp_path / "conditional")
    losses, log = train_stage(stage_env, synthetic_tiny_dir, model_dir, "finetune_conditional.gin",
                              f"--gin.STUNET_CHECKPOINT={stunet_run[0]}")
    baseline = frozen_losses(stage_env, synthetic_tiny_dir, str(tmp_path / "frozen"), "finetune_conditional.gin",
                             f"--gin.STUNET_CHECKPOINT={stunet_run[0]}")
    assert_learns_against_frozen_run(losses, baseline)
    stunet, conditional = saved_state(stunet_run[0]), saved_state(model_dir)
    assert conditional["trainable_params"]["input_conv"]["kernel"].shape[-2] == 7
    stunet_frozen = param_paths.flatten(stunet["frozen_params"])
    for path, value in param_paths.flatten(conditional["frozen_params"]).items():
        np.testing.assert_array_equal(value, stunet_frozen[path], err_msg=path)


def test_pretrain_sr_then_train_inflated_ssr(tmp_path, stage_env, synthetic_tiny_dir):
    sr_dir, ssr_dir = str(tmp_path / "sr"), str(tmp_path / "ssr")
    sr_losses, _ = train_stage(stage_env, synthetic_tiny_dir, sr_dir, "pretrain_sr.gin")
    assert_loss_goes_down(sr_losses)
    ssr_losses, _ = train_stage(stage_env, synthetic_tiny_dir, ssr_dir, "train_ssr.gin",
                                f"--gin.SR_CHECKPOINT={sr_dir}")
    assert len(ssr_losses) == 24 and np.all(np.isfinite(ssr_losses))
    sr, ssr = saved_state(sr_dir), saved_state(ssr_dir)
    sr_weights = param_paths.flatten(sr["ema_params"])  # the SR run trains everything; EMA is what loads
    frozen, trainable = param_paths.flatten(ssr["frozen_params"]), param_paths.flatten(ssr["trainable_params"])
    assert set(frozen) == set(sr_weights)
    assert trainable and all("temporal" in path for path in trainable)
    for path, value in sr_weights.items():
        np.testing.assert_array_equal(frozen[path], value, err_msg=path)
