"""Smoke tests of the benchmark code paths at tiny size (no timing assertions)."""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import pytest

from benchmarks import compiled_cost, cost_report, fake_devices, memory_scaling, minimal_step
from lumiere_jax.models import config as config_lib
from lumiere_jax.models import inflate
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.train import state as state_lib

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
    config = cost_report.variant_config("tiny", "fixed", frames=12, remat="on")
    assert config.temporal.resampling is False and config.temporal.num_frames == 12 and config.remat
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
    params = {**state_lib.flatten(stunet.args[0]), **state_lib.flatten(stunet.args[1])}
    mask = state_lib.flatten(inflate.trainable_mask(state_lib.unflatten(params)))
    assert stunet.num_trainable == sum(math.prod(params[path].shape) for path, on in mask.items() if on)
    assert 0 < stunet.num_trainable < stunet.num_params
    assert stunet.args[3]["x0"].shape == (2, 4, 16, 16, 3)
    for cost in costs.values():
        assert cost.flops > 0 and cost.temp_bytes > 0
        assert cost.peak_bytes == (cost.argument_bytes + cost.output_bytes - cost.alias_bytes + cost.temp_bytes
                                   + cost.generated_code_bytes)
    # Frames halve at the coarser level, so STUNet does strictly less work than the fixed-resolution network.
    assert costs[True].flops < costs[False].flops
    assert cost_report.ratios({
        "stunet": {**costs[True].summary(), "flops": costs[True].flops},
        "fixed": {**costs[False].summary(), "flops": costs[False].flops},
    })["flops"] == pytest.approx(costs[True].flops / costs[False].flops)


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
