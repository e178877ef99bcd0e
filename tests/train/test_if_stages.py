"""From a (tiny, random) DeepFloyd IF directory in the diffusers layout to a trained STUNet and SSR with the two
commands of the README: import the U-Net, then train its temporal layers from the IF run files."""

import os
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
from diffusers import UNet2DConditionModel

from lumiere_jax.models import if_weights, param_paths

IF_FIELDS = dict(act_fn="gelu", addition_embed_type="text", resnet_time_scale_shift="scale_shift",
                 mid_block_type="UNetMidBlock2DSimpleCrossAttn", cross_attention_norm="group_norm", norm_eps=1e-5,
                 out_channels=6, block_out_channels=(16, 32), layers_per_block=1, attention_head_dim=8,
                 encoder_hid_dim=32, cross_attention_dim=32, addition_embed_type_num_heads=4, norm_num_groups=4,
                 down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
                 up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"))
# The tiny synthetic clips are 32x32: stage I at 32x32, stage II 8 -> 32 (IF's 4x).
STAGES = {
    "stunet": (dict(IF_FIELDS, sample_size=32, in_channels=3), "train_stunet_from_if.gin", "NUM_FRAMES"),
    "ssr": (dict(IF_FIELDS, sample_size=32, in_channels=6, class_embed_type="timestep"), "train_ssr_from_if.gin",
            "WINDOW_FRAMES"),
}


def run(env, *args):
    result = subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_train_from_an_imported_if_directory(stage, tmp_path, cli_env, synthetic_tiny_dir):
    fields, run_file, frames_macro = STAGES[stage]
    torch.manual_seed(0)
    UNet2DConditionModel(**fields).save_pretrained(tmp_path / "IF" / "unet")
    if_dir, imported, model_dir = str(tmp_path / "IF"), str(tmp_path / "imported"), str(tmp_path / "run")
    env = {**cli_env, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_THREEFRY_PARTITIONABLE": "0"}
    run(env, "lumiere_jax.stages.if_stage", f"--if_dir={if_dir}", f"--output_dir={imported}")
    result = run(env, "lumiere_jax.train", f"--gin_file=runs/{run_file}", "--gin_file=runs/cpu_tiny.gin",
                 f"--gin.MODEL_DIR={model_dir}", f"--gin.IF_DIR={if_dir}", f"--gin.IF_CHECKPOINT={imported}",
                 f"--gin.SyntheticMotionConfig.data_dir={synthetic_tiny_dir}", f"--gin.{frames_macro}=4",
                 "--gin.TemporalConfig.attention_blocks=1", "--gin.TemporalConfig.attention_heads=2",
                 "--gin.train.num_train_steps=4", "--gin.CheckpointConfig.save_every_steps=4",
                 "--gin.EvalConfig.every_steps=0", "--gin.MonitorConfig.log_every_steps=1")
    assert "step 4/4" in result.stderr and "loss nan" not in result.stderr
    state = ocp.PyTreeCheckpointer().restore(os.path.join(model_dir, "checkpoints", "4", "state"))
    frozen = param_paths.flatten(state["frozen_params"])
    trainable = param_paths.flatten(state["trainable_params"])
    assert trainable and all(param_paths.is_temporal(path) for path in trainable)
    # IF's layers are the imported weights, untouched by training.
    _, imported_params = if_weights.load_if_unet(if_dir)
    expected = param_paths.flatten(imported_params)
    assert set(frozen) == set(expected)
    for path, value in expected.items():
        np.testing.assert_array_equal(np.asarray(frozen[path]), np.asarray(value))
    if stage == "stunet":  # the sampling job runs the trained IF STUNet (sample/if.gin)
        prompts = tmp_path / "prompts.txt"
        prompts.write_text("a red square moves right\n")
        output_dir = tmp_path / "samples"
        run(env, "lumiere_jax.sample", "--gin_file=sample/if.gin", "--gin_file=sample/cpu_tiny.gin",
            f"--gin.IF_DIR={if_dir}", f"--gin.BASE_CHECKPOINT={model_dir}", f"--gin.PROMPTS={prompts}",
            f"--gin.OUTPUT_DIR={output_dir}", "--gin.NUM_FRAMES=4", "--gin.TEXT_LENGTH=80",
            "--gin.base/TemporalConfig.attention_blocks=1", "--gin.base/TemporalConfig.attention_heads=2",
            "--gin.SamplingConfig.num_steps=2", "--gin.ModelsConfig.use_ema=False")
        assert list(output_dir.rglob("*.mp4"))
