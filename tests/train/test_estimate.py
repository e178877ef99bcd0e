"""The compiled step's estimate (memory against HBM, model FLOPs, MFU) and MFU in the progress reports."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

import toy
from lumiere_jax.models import config as model_config
from lumiere_jax.models import flops as flops_lib
from lumiere_jax.models import param_paths
from lumiere_jax.parallel import chips as chips_lib
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.stages import factory
from lumiere_jax.train import estimate as estimate_lib
from lumiere_jax.train import metrics as metrics_lib


def test_throughput_reports_mfu_from_model_flops_and_peak(monkeypatch):
    clock = iter([0.0, 2.0])
    monkeypatch.setattr(metrics_lib.time, "perf_counter", lambda: next(clock))
    throughput = metrics_lib.Throughput(0, 100, 8, flops_per_device_step=3e12, model_flops_per_device_step=2e12,
                                        peak_flops=10e12)
    rates = throughput.report(4)  # 4 steps in 2 s
    assert rates["mfu"] == pytest.approx(2e12 * 2 / 10e12)
    assert rates["tflops_per_device"] == pytest.approx(6.0)
    assert "MFU 0.400 (XLA 6.00 TFLOP/s/device)" in throughput.progress_line(4, rates)


def test_estimate_of_a_compiled_program_against_hbm():
    mesh = mesh_lib.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    compiled = jax.jit(lambda x: (x @ x).sum(0)).lower(jax.ShapeDtypeStruct((512, 512), jnp.float32)).compile()
    roomy = chips_lib.ChipSpecs(peak_flops={"cpu": 1e11}, hbm_bytes={"cpu": 2.0 ** 30})
    estimate = estimate_lib.step_estimate(compiled, 1, 2 * 512 ** 3, mesh, roomy)
    assert estimate.cost.argument_bytes == 512 * 512 * 4 and estimate.fits
    assert estimate.model_flops_per_chip == 2 * 512 ** 3 and estimate.peak_source == "bf16 peak table"
    assert "fits 0.85 x 1.00 GiB HBM" in "\n".join(estimate.lines())
    cramped = dataclasses.replace(roomy, hbm_bytes={"cpu": 512 * 512 * 4 / 0.9})  # above 0.85 x HBM
    assert estimate_lib.step_estimate(compiled, 1, None, mesh, cramped).fits is False
    assert "HBM unknown" in "\n".join(estimate_lib.step_estimate(compiled, 1, None, mesh, dataclasses.replace(
        roomy, hbm_bytes={})).lines())


def test_adapter_model_flops_follow_the_trainable_mask():
    adapter = factory.unet_adapter(stage="stunet", size="tiny", trainable_patterns=(".*temporal.*",))
    config = model_config.stunet_config("tiny")
    expected = flops_lib.model_flops(config, 2, config.temporal.num_frames, trained=param_paths.is_temporal)
    assert estimate_lib.adapter_model_flops(adapter, 2, True) == expected.train
    assert estimate_lib.adapter_model_flops(adapter, 2, False) == expected.forward
    assert estimate_lib.adapter_model_flops(toy.toy_adapter(), 2, True) is None  # not a U-Net
