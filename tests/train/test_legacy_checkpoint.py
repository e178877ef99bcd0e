"""Run directories written by earlier versions keep loading (tests/fixtures/make_legacy_run.py made the fixture).

The fixture is a tiny STUNet run from main at 1c15e15 (checkpoint at step 2, its data snapshot and configs).
Resuming it with today's trainer and the same command line (plus runs/cpu_tiny_bytes.gin: the fixture's tiny
runs used the byte-level random T5) must restore exactly the saved parameters.
"""

import importlib.util
import os
import shutil
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import tensorflow_datasets as tfds

from lumiere_jax.data import synthetic_motion
from lumiere_jax.models import param_paths

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
LEGACY_RUN = os.path.join(FIXTURES, "legacy_run_1c15e15")


# Bindings the fixture maker's command line (written for 1c15e15) spells differently today.
RENAMED_BINDINGS = {"--gin.train.log_every_steps=": "--gin.MonitorConfig.log_every_steps=",
                    "--gin.train.eval_every_steps=": "--gin.EvalConfig.every_steps="}


def todays_flags(flags: list[str]) -> list[str]:
    renamed = []
    for flag in flags:
        for old, new in RENAMED_BINDINGS.items():
            flag = new + flag[len(old):] if flag.startswith(old) else flag
        renamed.append(flag)
    return renamed


class SyntheticMotionFirstRelease(synthetic_motion.SyntheticMotion, skip_registration=True):
    """synthetic_motion 1.0.0 (its train split still shows the held-out combinations), the fixture's data.

    tfds generates only a builder's newest version, so the old one is a subclass that declares it.
    """

    name = "synthetic_motion"
    VERSION = tfds.core.Version("1.0.0")


def _fixture_maker():
    spec = importlib.util.spec_from_file_location("make_legacy_run", os.path.join(FIXTURES, "make_legacy_run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_resuming_a_legacy_run_restores_its_parameters(tmp_path, cli_env):
    maker = _fixture_maker()
    # The saved tf.data iterator names its TFRecord files by absolute path and the fixture's dataset version
    # (1.0.0): render that data there, and today's version, which the resumed run's pipeline is built on.
    for config in ("tiny", "image_tiny"):
        for builder_class in (SyntheticMotionFirstRelease, synthetic_motion.SyntheticMotion):
            builder_class(config=config, data_dir=maker.DATA_DIR).download_and_prepare()
    model_dir = str(tmp_path / "run")
    shutil.copytree(LEGACY_RUN, model_dir)
    reference = np.load(os.path.join(LEGACY_RUN, "reference.npz"))
    # Learning rate 0: the step after the restore leaves trainable and frozen parameters as restored.
    result = subprocess.run(
        [sys.executable, "-m", "lumiere_jax.train", "--gin_file=runs/train_stunet.gin",
         "--gin_file=runs/cpu_tiny.gin", "--gin_file=runs/cpu_tiny_bytes.gin", *todays_flags(maker.TINY + maker.VIDEO),
         f"--gin.MODEL_DIR='{model_dir}'",
         "--gin.T2I_CHECKPOINT='/nonexistent/t2i'", f"--gin.SyntheticMotionConfig.data_dir='{maker.DATA_DIR}'",
         "--gin.train.num_train_steps=3", "--gin.CheckpointConfig.save_every_steps=1",
         "--gin.OptimizerConfig.learning_rate=0.0"],
        env=cli_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "restored checkpoint at step 2" in result.stderr, result.stderr[-3000:]
    assert "input pipeline resumed at step 2 from snapshot" in result.stderr  # the old data_snapshots/ layout
    state = ocp.PyTreeCheckpointer().restore(os.path.join(model_dir, "checkpoints", "3", "state"))
    assert int(state["step"]) == 3 == int(reference["step"]) + 1
    for group in ("trainable_params", "frozen_params"):
        values = param_paths.flatten(state[group])
        assert values, group
        for path, value in values.items():
            np.testing.assert_array_equal(np.asarray(value), reference[f"{group}/{path}"], err_msg=path)
