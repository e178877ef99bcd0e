"""Smoke tests of the benchmark code paths at tiny size (no timing assertions)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from benchmarks import (compiled_cost, conv_ceiling, cost_report, demo_sampling, direction_gap, dropout_masks,
                        fake_devices, long_video, memory_scaling, minimal_step, solvers, step_profile)
from lumiere_jax.data import synthetic_render
from lumiere_jax.evaluate import caption_parser
from lumiere_jax.evaluate import synthetic_quality
from lumiere_jax.models import config as config_lib
from lumiere_jax.models import inflate
from lumiere_jax.models import param_paths
from lumiere_jax.parallel import mesh as mesh_lib

GIB = 2.0 ** 30

# Smallest STUNet with both kinds of temporal block: (2+1)D conv at level 0, attention at level 1.
SMOKE_STUNET = config_lib.UNetConfig(
    image_size=16, base_channels=16, channel_multipliers=(1, 2), num_res_blocks=1, attention_levels=(1,),
    cross_attention_levels=(1,), num_heads=2, norm_groups=4, embed_dim=32, text_embed_dim=16, text_length=4,
    temporal=config_lib.TemporalConfig(num_frames=4, attention_blocks=1, attention_heads=2))


def test_request_cpu_devices_refuses_after_jax_import():
    with pytest.raises(RuntimeError, match="before importing jax"):
        fake_devices.request_cpu_devices(4)


def test_fit_recovers_a_linear_peak_and_the_batch_that_fits():
    fixed, per_clip = 3.0 * GIB, 10.0 * GIB
    points = {batch: {"peak_bytes": fixed + per_clip * batch} for batch in (1, 2)}
    assert memory_scaling.fit(points) == pytest.approx((fixed, per_clip))
    assert memory_scaling.fitting_batch(fixed, per_clip, 95.0) == 9  # 3 + 10 * 9 = 93 <= 95 < 103
    assert memory_scaling.fitting_batch(fixed, per_clip, 12.0) == 0
    # One measured batch plus a slope taken from another mesh.
    assert memory_scaling.fit({1: points[1]}, slope=per_clip) == pytest.approx((fixed, per_clip))
    with pytest.raises(ValueError, match="slope"):
        memory_scaling.fit({1: points[1]})


def test_topology_chips_counts_the_slice():
    assert [memory_scaling.topology_chips(name) for name in ("v5:2x2x2", "v5:4x4x4", "v5:4x8x8", "v6e:2x4")] == [
        8, 64, 256, 8]


def test_variant_config_overrides():
    config = cost_report.variant_config("tiny", "fixed", frames=12, remat="save_dots")
    assert config.temporal.resampling is False and config.temporal.num_frames == 12 and config.remat == "save_dots"
    assert cost_report.variant_config("tiny", "stunet", 0, "config") == config_lib.stunet_config("tiny")


def test_stunet_step_compiles_and_costs_less_than_fixed_resolution():
    mesh = mesh_lib.make_mesh((1, 2, 1), devices=jax.devices()[:2])
    costs, setups = {}, {}
    for resampling in (True, False):
        config = dataclasses.replace(
            SMOKE_STUNET, temporal=dataclasses.replace(SMOKE_STUNET.temporal, resampling=resampling))
        setups[resampling] = minimal_step.setup(config, mesh, 1, video=True, freeze_spatial=True)
        costs[resampling] = compiled_cost.compile_step(setups[resampling])
    stunet = setups[True]
    # Only the temporal parameters train (paper section 2), and the batch is split over data x fsdp.
    params = {**param_paths.flatten(stunet.args[0]), **param_paths.flatten(stunet.args[1])}
    mask = param_paths.flatten(inflate.trainable_mask(param_paths.unflatten(params)))
    assert stunet.num_trainable == sum(math.prod(params[path].shape) for path, on in mask.items() if on)
    assert 0 < stunet.num_trainable < stunet.num_params
    assert stunet.args[3]["x0"].shape == (2, 4, 16, 16, 3)
    for resampling, cost in costs.items():
        assert cost.flops > 0 and cost.temp_bytes > 0
        # XLA's argument and donated (aliased) bytes against the per-device shard sizes of the arguments.
        per_argument = [per_device_bytes(arg, sharding)
                        for arg, sharding in zip(setups[resampling].args, setups[resampling].shardings)]
        assert cost.argument_bytes == sum(per_argument)
        assert cost.alias_bytes == per_argument[0] + per_argument[2]  # trainable params and optimizer state
    # Frames halve at the coarser level, so STUNet does strictly less work than the fixed-resolution network.
    assert costs[True].flops < costs[False].flops


def per_device_bytes(tree, shardings) -> int:
    """Bytes one device holds of `tree` (ShapeDtypeStructs) under `shardings` (a matching tree or one sharding)."""
    leaves = jax.tree.leaves(tree)
    sharding_leaves = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
    if len(sharding_leaves) == 1:
        sharding_leaves = sharding_leaves * len(leaves)
    return sum(math.prod(sharding.shard_shape(leaf.shape)) * np.dtype(leaf.dtype).itemsize
               for leaf, sharding in zip(leaves, sharding_leaves, strict=True))


class _KnownProgram:
    """`x + 1` on one float32 [512, 512] array (1 MiB): the StepSetup interface `compile_step` reads."""

    def __init__(self, donate: bool):
        self.mesh = mesh_lib.make_mesh((1, 1, 1), devices=jax.devices()[:1])
        self.args = (jax.ShapeDtypeStruct((512, 512), np.float32),)
        self.donate = donate

    def jitted(self):
        return jax.jit(lambda x: x + 1.0, donate_argnums=(0,) if self.donate else ())


@pytest.mark.parametrize("donate", [False, True])
def test_peak_bytes_of_a_program_with_known_memory(donate):
    """1 MiB in, 1 MiB out, nothing temporary: the peak is 2 MiB, or 1 MiB when the input is donated."""
    cost = compiled_cost.compile_step(_KnownProgram(donate))
    expected = (1 if donate else 2) * 2**20
    assert expected <= cost.peak_bytes <= expected + cost.generated_code_bytes + 4096


def test_ratios_are_stunet_over_fixed():
    stunet = {"flops": 30.0, "peak_bytes": 6, "temp_bytes": 5, "argument_bytes": 7}
    fixed = {"flops": 120.0, "peak_bytes": 8, "temp_bytes": 0, "argument_bytes": 14}
    assert cost_report.ratios({"stunet": stunet, "fixed": fixed}) == {
        "flops": 0.25, "peak_bytes": 0.75, "argument_bytes": 0.5}  # temp_bytes: no fixed figure to divide by


def test_benchmark_step_runs_and_updates_only_trainable_parameters():
    mesh = mesh_lib.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    setup = minimal_step.setup(SMOKE_STUNET, mesh, 1, video=True, freeze_spatial=True)
    trainable, frozen, opt_state, batch, rng = setup.concrete_args()
    before = jax.tree.map(np.asarray, trainable)
    with mesh_lib.mesh_context(mesh):
        new_trainable, _, loss = setup.jitted()(trainable, frozen, opt_state, batch, rng)
    assert np.isfinite(float(loss))
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, np.asarray(b)), before, new_trainable)
    assert any(jax.tree.leaves(changed))  # Adam moved some temporal parameter


def test_solver_search_finds_the_fewest_steps_past_a_non_monotone_start():
    def error(solver, spacing, num_steps):  # 1 / n, with a dip to 0.02 at 5 steps
        return 0.02 if num_steps == 5 else 1.0 / num_steps

    assert solvers.steps_to_reach(error, "ddim", "uniform", 0.025) == 5  # found by the scan
    assert solvers.steps_to_reach(error, "ddim", "uniform", 1 / 300) == 300  # doubling, then bisection
    assert solvers.steps_to_reach(error, "ddim", "uniform", 1e-9) is None


def test_flow_map_error_is_small_for_the_exact_map_and_smaller_for_the_multistep_solver():
    error = solvers.FlowMapError(num_samples=256)
    assert error("dpmpp_2m", "quadratic", 25) < error("ddim", "quadratic", 25) / 3
    assert error("dpmpp_2m", "quadratic", 400) < 1e-4  # the closed forms agree


def test_seam_pairs_mark_where_the_covering_windows_change():
    half = long_video.seam_pairs(32, 8, 4)  # windows at 0, 4, ..., 24
    assert np.flatnonzero(half).tolist() == [3, 7, 11, 15, 19, 23, 27]
    assert np.flatnonzero(long_video.seam_pairs(32, 8, 8)).tolist() == [7, 15, 23]
    assert not long_video.seam_pairs(8, 8, 4).any()


def test_pair_consistency_flags_a_colour_change_and_a_jump():
    scene = synthetic_render.sample_scene(np.random.default_rng(3), 16, 32, 32)
    scene = dataclasses.replace(scene, object_color="red", background_color="blue", motion="right",
                                positions=np.stack([np.full(16, 12.0), np.linspace(8, 20, 16)], -1))
    video = synthetic_render.render(scene, 32, 32)
    consistent, with_motion = long_video.pair_consistency(synthetic_quality.analyse_video(video))
    assert consistent.all() and with_motion.all()
    recoloured = synthetic_render.render(dataclasses.replace(scene, object_color="yellow"), 32, 32)
    jumped = synthetic_render.render(dataclasses.replace(
        scene, positions=scene.positions + np.array([[0.0, 0.0]] * 8 + [[8.0, 0.0]] * 8)), 32, 32)
    consistent, _ = long_video.pair_consistency(
        synthetic_quality.analyse_video(np.concatenate([video[:8], recoloured[8:]])))
    assert np.flatnonzero(~consistent).tolist() == [7]
    consistent, with_motion = long_video.pair_consistency(synthetic_quality.analyse_video(jumped))
    assert consistent.all() and np.flatnonzero(~with_motion).tolist() == [7]


def test_cost_report_of_an_inflated_if_model(tmp_path):
    """The IF-I STUNet report from a (tiny) IF unet/config.json, compiled on the CPU backend (the command line:
    fake devices must be requested before jax is imported)."""
    fields = dict(act_fn="gelu", addition_embed_type="text", resnet_time_scale_shift="scale_shift",
                  mid_block_type="UNetMidBlock2DSimpleCrossAttn", cross_attention_norm="group_norm", norm_eps=1e-5,
                  sample_size=16, in_channels=3, out_channels=6, block_out_channels=[16, 32], layers_per_block=1,
                  attention_head_dim=8, encoder_hid_dim=32, cross_attention_dim=32,
                  addition_embed_type_num_heads=4, norm_num_groups=4,
                  down_block_types=["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"],
                  up_block_types=["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"])
    config_json = tmp_path / "config.json"
    config_json.write_text(json.dumps(fields))
    report = tmp_path / "report.json"
    repo = pathlib.Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.cost_report", "--if-config", str(config_json), "--frames", "4",
         "--variants", "stunet", "--mesh", "1,2,1", "--devices", "2", "--json", str(report)],
        cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads(report.read_text())["rows"]["stunet"]
    assert row["frames"] == 4 and row["image_size"] == 16 and row["dtype"] == "bfloat16"
    assert 0 < row["num_trainable"] < row["num_params"] and row["flops"] > 0 and row["peak_bytes"] > 0
    assert "[stunet] IF" in result.stdout


def test_cost_report_reports_a_step_refused_for_memory(monkeypatch, capsys):
    """A compile the TPU compiler refuses for memory ends the report with needed vs available, no traceback."""
    def refused(setup):
        raise RuntimeError("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory "
                           "space hbm. Used 38.63G of 31.25G hbm. Exceeded hbm capacity by 7.38G.")

    monkeypatch.setattr(compiled_cost, "compile_step", refused)
    monkeypatch.setattr(fake_devices, "request_cpu_devices", lambda count: None)  # this process has its devices
    assert cost_report.main(["--size", "tiny", "--devices", "2", "--variants", "stunet"]) == 0
    out = capsys.readouterr().out
    assert "does not fit: program need 38.63 GiB > 31.25 GiB available per chip" in out


def test_step_profile_tells_convolution_kinds_apart_in_compiled_hlo():
    """Forward, input-gradient and weight-gradient convolutions of a compiled conv gradient are told apart, and
    the layer comes from the metadata."""
    def loss(kernel, image):  # image: [1, 16, 16, 4], kernel: [3, 3, 4, 4]
        out = jax.lax.conv_general_dilated(image, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return (out ** 2).sum()

    kernel, image = np.ones((3, 3, 4, 4), np.float32), np.ones((1, 16, 16, 4), np.float32)
    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(kernel, image).compile().as_text()
    kinds = {step_profile.op_kind(opcode, text) for _, opcode, text in step_profile.instructions(hlo).values()}
    assert {"conv forward", "conv input gradient", "conv weight gradient"} <= kinds
    text = 'metadata={op_name="jit(_train_step)/transpose(jvp(UNet))/up_0_res_1/conv_0/conv_general_dilated"}'
    assert step_profile.layer_of(text) == "up_res/conv"


def test_conv_ceiling_finds_each_convolution_of_a_gradient_with_its_kind_and_flops():
    """The jaxpr of a conv's gradient, under jit, holds one forward, one input-gradient and one weight-gradient
    convolution; each, compiled alone, costs XLA's count of the 3x3 convolution (2 x C_in x C_out FLOPs per tap
    inside the 16x16 image: (3 x 16 - 2)^2 taps per image, the zero padding skipped) and returns the size of what
    it differentiates or computes."""
    def loss(kernel, image):  # image: [2, 16, 16, 4], kernel: [3, 3, 4, 8]
        out = jax.lax.conv_general_dilated(image, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return (out ** 2).sum()

    kernel, image = jax.ShapeDtypeStruct((3, 3, 4, 8), np.float32), jax.ShapeDtypeStruct((2, 16, 16, 4), np.float32)
    found = conv_ceiling.step_convolutions(jax.jit(jax.grad(loss, argnums=(0, 1))), (kernel, image))
    assert sorted(conv.kind for conv in found.elements()) == ["forward", "input gradient", "weight gradient"]
    for convolution in found:
        call, flops = convolution.call()
        assert flops == 2 * 2 * (3 * 16 - 2) ** 2 * 4 * 8
        expected = {"forward": (2, 16, 16, 8), "input gradient": (2, 16, 16, 4), "weight gradient": (3, 3, 4, 8)}
        assert np.asarray(call()).shape == expected[convolution.kind]
    assert conv_ceiling.ceiling_ratio(100.0, 2.0, 100.0) == 0.5


def test_demo_sampling_prompt_sets_share_no_prompt_or_seed_and_settings_name_the_threshold():
    scored, validation = demo_sampling.prompt_rows("scored"), demo_sampling.prompt_rows("validation")
    assert not {row["prompt"] for row in scored} & {row["prompt"] for row in validation}
    assert not {row["seed"] for row in scored} & {row["seed"] for row in validation}
    assert len({row["id"] for row in scored + validation}) == len(scored) + len(validation)
    assert demo_sampling.setting_flags(5, "static")[-1] == "--gin.SamplingConfig.threshold_max_scale=1.0"
    with pytest.raises(ValueError, match="unknown thresholding"):
        demo_sampling.setting_flags(5, "percentile")


_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


@pytest.mark.parametrize("stride", [1, 2])
def test_direction_gap_clips_move_as_captioned_and_reverse_to_the_opposite(stride):
    clips, captions, held = direction_gap.ordered_clips(32, 8, stride, copies=1)
    assert clips.shape == (16, 8, 32, 32, 3) and len(captions) == 16 and held.sum() == 8
    for clip, caption in zip(clips, captions):
        motion = caption_parser.parse_prompt(caption).motion
        assert synthetic_quality.analyse_video(clip).motion == motion
        assert synthetic_quality.analyse_video(clip[::-1]).motion == _OPPOSITE[motion]
    with pytest.raises(ValueError, match="do not fit"):
        direction_gap.ordered_clips(32, 8, 3, copies=1)


def test_direction_gap_summary():
    in_order, reversed_ = np.array([1.0, 2.0, 4.0, 1.0]), np.array([1.5, 2.0, 3.0, 1.2])
    gaps = direction_gap.relative_gaps(in_order, reversed_)
    np.testing.assert_allclose(gaps, [0.5, 0.0, -0.25, 0.2])
    numbers = direction_gap.summary(gaps, np.array([True, True, False, False]))
    assert numbers == pytest.approx({"all": 11.25, "held_out": 25.0, "seen": -2.5, "positive": 0.5})


def test_dropout_masks_times_each_mask_kind(capsys):
    dropout_masks.main(["--shape", "2,4,4,8", "--repeats", "1"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [row[0] for row in rows] == ["threefry", "hashed", "no"]
    assert all(float(row[-2]) > 0 for row in rows)
