"""Train-step throughput and achieved FLOP/s against the float32 matmul FLOP/s of the same process.

Stages: the T2I image network (every parameter trained) and the STUNet video network (T2I frozen, temporal
parameters trained), for the tiny and small presets, with the benchmarks' own step (`minimal_step`).
Achieved FLOP/s = FLOPs of the compiled step (XLA cost analysis) / measured step time.

On a shared machine the available FLOP/s drift, so the matmul reference (1024^3 and 2048^3) and the step are
timed alternately (matmul, step, matmul, step, ...) and the best of each is kept: ratio = achieved at the fastest
step / the fastest matmul. The same ratio is also given in process CPU time (FLOPs per CPU-second of the step /
of the matmul), which depends less on what else the machine runs.

    python -m benchmarks.train_step                     # tiny and small, float32
    python -m benchmarks.train_step --sizes tiny --repeats 5
    python -m benchmarks.train_step --sizes small --stages stunet --base_channels 64    # 37M-parameter STUNet
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax

from benchmarks import matmul_peak, minimal_step, model_flops
from lumiere_jax.models import config as config_lib
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.parallel import runtime

# (stage, clips or images per step) per preset size: small enough for a few steps on a 2-core CPU.
BATCHES = {"tiny": {"t2i": 8, "stunet": 2}, "small": {"t2i": 2, "stunet": 1}}


def stage_config(size: str, stage: str, dtype: str, base_channels: int | None = None) -> config_lib.UNetConfig:
    config = config_lib.t2i_config(size) if stage == "t2i" else config_lib.stunet_config(size)
    config = dataclasses.replace(config, dtype=dtype)
    return dataclasses.replace(config, base_channels=base_channels) if base_channels else config


def benchmark(size: str, stage: str, dtype: str, repeats: int, base_channels: int | None = None) -> dict:
    """Compiles and warms up one stage's step on one device, then times `repeats` (matmul, step) pairs."""
    config = stage_config(size, stage, dtype, base_channels)
    mesh = mesh_lib.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    batch = BATCHES[size][stage]
    setup = minimal_step.setup(config, mesh, batch, video=stage == "stunet", freeze_spatial=stage == "stunet")
    start = time.perf_counter()
    with mesh_lib.mesh_context(mesh):
        compiled = setup.jitted().lower(*setup.args).compile()
    compile_seconds = time.perf_counter() - start
    flops = model_flops.compiled_flops(compiled)

    state = list(setup.concrete_args())  # trainable, frozen, opt_state, batch, rng

    def step():  # trainable parameters and optimizer state are donated: carry the new ones
        state[0], state[2], loss = compiled(*state)
        return state[0], loss

    loss = _timed(step)[2]  # warm-up
    matmuls = [matmul_peak.matmul_call(size) for size in matmul_peak.DEFAULT_SIZES]
    peak = peak_cpu = 0.0
    step_seconds = step_cpu_seconds = float("inf")
    for _ in range(repeats):
        for call, matmul_flops in matmuls:
            for _ in range(2):
                wall, cpu, _ = _timed(call)
                peak, peak_cpu = max(peak, matmul_flops / wall), max(peak_cpu, matmul_flops / cpu)
        wall, cpu, loss = _timed(step)
        step_seconds, step_cpu_seconds = min(step_seconds, wall), min(step_cpu_seconds, cpu)
    return dict(size=size, stage=stage, dtype=dtype, batch=batch, frames=config.temporal.num_frames if
                stage == "stunet" else 1, image_size=config.image_size, base_channels=config.base_channels,
                num_params=setup.num_params, num_trainable=setup.num_trainable, compile_seconds=compile_seconds,
                step_seconds=step_seconds, step_cpu_seconds=step_cpu_seconds, flops=flops, loss=float(loss),
                matmul_peak=peak, matmul_peak_cpu=peak_cpu)


def _timed(call) -> tuple[float, float, object]:
    """Wall and process CPU seconds of `call()`, waited for, and its last output."""
    wall, cpu = time.perf_counter(), time.process_time()
    outputs = jax.block_until_ready(call())
    return time.perf_counter() - wall, time.process_time() - cpu, outputs[-1]


def main() -> None:
    runtime.configure_cpu_flags()  # the trainer's XLA:CPU flags (before XLA starts)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--stages", default="t2i,stunet")
    parser.add_argument("--repeats", type=int, default=3, help="(matmul, step) pairs timed; the best of each is kept")
    parser.add_argument("--base_channels", type=int, default=None, help="override the preset's base channels")
    parser.add_argument("--dtype", default="float32",
                        help="compute dtype (presets use bfloat16 from small up; CPUs have no fast bfloat16)")
    args = parser.parse_args()
    print(f"{jax.devices()[0].device_kind}, {jax.device_count()} device(s); dtype {args.dtype}; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
    for size in args.sizes.split(","):
        for stage in args.stages.split(","):
            row = benchmark(size, stage, args.dtype, args.repeats, args.base_channels)
            achieved, peak = row["flops"] / row["step_seconds"], row["matmul_peak"]
            print(f"{size:5s} {stage:6s} base {row['base_channels']} batch {row['batch']} x {row['frames']}x"
                  f"{row['image_size']}^2: params {row['num_params'] / 1e6:.1f}M (trained "
                  f"{row['num_trainable'] / 1e6:.1f}M), compile {row['compile_seconds']:.1f} s, "
                  f"{row['step_seconds']:.3f} s/step, {row['flops'] / 1e9:.1f} GFLOP/step, "
                  f"achieved {achieved / 1e9:.1f} GFLOP/s = {achieved / peak:.2f} x the best float32 matmul's "
                  f"{peak / 1e9:.1f} GFLOP/s; CPU time {row['step_cpu_seconds']:.3f} s/step, ratio "
                  f"{row['flops'] / row['step_cpu_seconds'] / row['matmul_peak_cpu']:.2f} (loss {row['loss']:.3f}); "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
