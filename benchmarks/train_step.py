"""Train-step throughput and achieved FLOP/s against the best float32 matmul FLOP/s of the same process.

Stages: the T2I image network (every parameter trained) and the STUNet video network (T2I frozen, temporal
parameters trained), for the tiny and small presets, with the benchmarks' own step (`minimal_step`).
Achieved FLOP/s = FLOPs of the compiled step (XLA cost analysis) / measured step time.

    python -m benchmarks.train_step                     # tiny and small, float32
    python -m benchmarks.train_step --sizes tiny --steps 10
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax

from benchmarks import matmul_peak, minimal_step
from lumiere_jax.models import config as config_lib
from lumiere_jax.parallel import mesh as mesh_lib

# (stage, clips or images per step) per preset size: small enough for a few steps on a 2-core CPU.
BATCHES = {"tiny": {"t2i": 8, "stunet": 2}, "small": {"t2i": 2, "stunet": 1}}


def stage_config(size: str, stage: str, dtype: str) -> config_lib.UNetConfig:
    config = config_lib.t2i_config(size) if stage == "t2i" else config_lib.stunet_config(size)
    return dataclasses.replace(config, dtype=dtype)


def benchmark(size: str, stage: str, dtype: str, steps: int) -> dict:
    """Compiles, warms up and times `steps` train steps of one stage on one device."""
    config = stage_config(size, stage, dtype)
    mesh = mesh_lib.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    batch = BATCHES[size][stage]
    setup = minimal_step.setup(config, mesh, batch, video=stage == "stunet", freeze_spatial=stage == "stunet")
    start = time.perf_counter()
    with mesh_lib.mesh_context(mesh):
        compiled = setup.jitted().lower(*setup.args).compile()
    compile_seconds = time.perf_counter() - start
    cost = compiled.cost_analysis()
    flops = float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])

    trainable, frozen, opt_state, batch_arrays, rng = setup.concrete_args()
    trainable, opt_state, loss = compiled(trainable, frozen, opt_state, batch_arrays, rng)  # warm-up
    jax.block_until_ready(loss)
    # Measured right before the steps: on a shared machine the available FLOP/s drift during a run.
    peak = matmul_peak.peak_flops_per_second()
    start = time.perf_counter()
    for _ in range(steps):
        trainable, opt_state, loss = compiled(trainable, frozen, opt_state, batch_arrays, rng)
    jax.block_until_ready((trainable, loss))
    step_seconds = (time.perf_counter() - start) / steps
    return dict(size=size, stage=stage, dtype=dtype, batch=batch, frames=config.temporal.num_frames if
                stage == "stunet" else 1, image_size=config.image_size, num_params=setup.num_params,
                num_trainable=setup.num_trainable, compile_seconds=compile_seconds, step_seconds=step_seconds,
                flops=flops, loss=float(loss), matmul_peak=peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--stages", default="t2i,stunet")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--dtype", default="float32",
                        help="compute dtype (presets use bfloat16 from small up; CPUs have no fast bfloat16)")
    args = parser.parse_args()
    print(f"{jax.devices()[0].device_kind}, {jax.device_count()} device(s); dtype {args.dtype}", flush=True)
    for size in args.sizes.split(","):
        for stage in args.stages.split(","):
            row = benchmark(size, stage, args.dtype, args.steps)
            achieved, peak = row["flops"] / row["step_seconds"], row["matmul_peak"]
            print(f"{size:5s} {stage:6s} batch {row['batch']} x {row['frames']}x{row['image_size']}^2: "
                  f"params {row['num_params'] / 1e6:.1f}M (trained {row['num_trainable'] / 1e6:.1f}M), "
                  f"compile {row['compile_seconds']:.1f} s, {1 / row['step_seconds']:.3f} steps/s, "
                  f"{row['batch'] / row['step_seconds']:.2f} examples/s, {row['flops'] / 1e9:.1f} GFLOP/step, "
                  f"achieved {achieved / 1e9:.1f} GFLOP/s = {achieved / peak:.2f} x the float32 matmul's "
                  f"{peak / 1e9:.1f} GFLOP/s measured just before "
                  f"(loss {row['loss']:.3f})", flush=True)


if __name__ == "__main__":
    main()
