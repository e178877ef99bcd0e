"""Compile-only per-device memory and FLOPs of the STUNet training step on fake meshes of several sizes.

Each (mesh size, per-device batch) point is one `benchmarks.cost_report` subprocess (the fake CPU device count
is fixed at jax import). Per mesh, peak memory is fitted as `fixed + per_clip * batch` through the measured
batches, giving the per-device batch that fits each accelerator memory size; with `--verify`, the predicted
batch for the largest memory size is compiled too (when it is at least 1) to check the fit.

    python -m benchmarks.memory_scaling                                  # paper, 8/64/256 devices, batch 1, 2
    python -m benchmarks.memory_scaling --meshes 8,64,256 --batches 1 --slope-from 8 --parallel 3
    # TPU topologies compiled on this CPU through libtpu (see BENCHMARKS.md): v5p with 8, 64 and 256 chips
    PYTHONPATH=.bench_libtpu python -m benchmarks.memory_scaling --topologies v5:2x2x2,v5:4x4x4,v5:4x8x8

XLA:CPU's buffer assignment ignores rematerialisation (its scheduler is free to move recomputation next to the
original forward pass), so CPU-backend temporaries over-state memory; the TPU compile is the realistic figure.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import subprocess
import sys
import tempfile

GIB = 2.0 ** 30
MEMORY_SIZES_GIB = (16.0, 95.0)


def topology_chips(topology: str) -> int:
    """Chips in a TPU topology name: "v5:4x4x4" -> 64."""
    return math.prod(int(size) for size in topology.split(":")[-1].split("x"))


def compile_point(size: str, frames: int, devices: int, batch: int, remat: str, workdir: str,
                  topology: str = "") -> dict:
    """One cost_report subprocess for the STUNet variant (fake CPU devices, or a TPU topology); its figures."""
    path = os.path.join(workdir, f"n{devices}_b{batch}.json")
    where = ["--target", "tpu", "--topology", topology] if topology else ["--devices", str(devices)]
    command = [sys.executable, "-m", "benchmarks.cost_report", "--size", size, "--frames", str(frames),
               *where, "--batch-per-device", str(batch), "--variants", "stunet", "--remat", remat, "--json", path]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}")
    return json.load(open(path))["rows"]["stunet"]


def fit(points: dict[int, dict], slope: float | None = None) -> tuple[float, float]:
    """`(fixed, per_clip)` bytes of `peak = fixed + per_clip * batch` through the measured batches.

    With one batch measured, `slope` (bytes per clip, from another mesh) is required: the per-device
    activations of a clip do not depend on the mesh size when the batch is split over data and fsdp.
    """
    batches = sorted(points)
    if len(batches) >= 2:
        low, high = batches[0], batches[-1]
        slope = (points[high]["peak_bytes"] - points[low]["peak_bytes"]) / (high - low)
    if slope is None:
        raise ValueError("one batch measured and no slope given; measure two batches or pass --slope-from")
    return points[batches[0]]["peak_bytes"] - slope * batches[0], slope


def fitting_batch(fixed: float, per_clip: float, memory_gib: float) -> int:
    """Largest per-device batch whose predicted peak fits `memory_gib` (0: not even one clip)."""
    return max(0, math.floor((memory_gib * GIB - fixed) / per_clip))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="paper")
    parser.add_argument("--frames", type=int, default=0, help="override the preset's frame count (0: preset)")
    parser.add_argument("--meshes", default="8,64,256", help="fake device counts (all on the fsdp axis)")
    parser.add_argument("--topologies", default="",
                        help="TPU topologies instead of fake CPU meshes, e.g. v5:2x2x2,v5:4x4x4 (needs libtpu)")
    parser.add_argument("--batches", default="1,2", help="per-device batches compiled on every mesh")
    parser.add_argument("--slope-from", type=int, default=0,
                        help="also compile batch 2 on this mesh only and use its per-clip slope everywhere")
    parser.add_argument("--remat", default="config", help="config, or a policy of models/remat.py")
    parser.add_argument("--parallel", type=int, default=1, help="compiles run at once (each needs a few GiB)")
    parser.add_argument("--verify", action="store_true", help="compile the predicted batch for the largest size")
    parser.add_argument("--json", default="", help="also write all figures to this JSON file")
    args = parser.parse_args()
    topologies = args.topologies.split(",") if args.topologies else []
    meshes = [topology_chips(name) for name in topologies] or [int(count) for count in args.meshes.split(",")]
    topology_of = dict(zip(meshes, topologies))
    batches = [int(batch) for batch in args.batches.split(",")]
    jobs = [(devices, batch) for devices in meshes for batch in batches]
    if args.slope_from and (args.slope_from, 2) not in jobs:
        jobs.append((args.slope_from, 2))

    workdir = tempfile.mkdtemp(prefix="memory_scaling_")
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
        futures = {job: pool.submit(compile_point, args.size, args.frames, *job, args.remat, workdir,
                                    topology_of.get(job[0], "")) for job in jobs}
        results = {job: future.result() for job, future in futures.items()}

    slope = None
    if args.slope_from:
        slope = fit({b: results[(args.slope_from, b)] for b in (1, 2)})[1]
    summary = {"points": {f"{n}x{b}": row for (n, b), row in results.items()}, "fits": {}}
    for devices in meshes:
        points = {batch: row for (n, batch), row in results.items() if n == devices}
        fixed, per_clip = fit(points, slope)
        fits = {memory: fitting_batch(fixed, per_clip, memory) for memory in MEMORY_SIZES_GIB}
        summary["fits"][devices] = dict(fixed_bytes=fixed, per_clip_bytes=per_clip, batch_that_fits=fits)
        for batch, row in sorted(points.items()):
            print(f"{devices:4d} devices, batch/device {batch}: peak {row['peak_bytes'] / GIB:7.2f} GiB "
                  f"(arguments {row['argument_bytes'] / GIB:.2f}, temps {row['temp_bytes'] / GIB:.2f}), "
                  f"{row['flops'] / 1e12:.2f} TFLOP/device, compile {row['compile_seconds']:.0f} s [measured]")
        print(f"{devices:4d} devices: peak = {fixed / GIB:.2f} GiB + {per_clip / GIB:.2f} GiB x batch "
              f"[fit{' with the slope of ' + str(args.slope_from) + ' devices' if slope is not None else ''}]; "
              + ", ".join(f"fits {memory:g} GiB at batch/device {batch}" for memory, batch in fits.items())
              + " [extrapolated]", flush=True)
        arguments = min(row["argument_bytes"] for row in points.values())
        if fixed < arguments:
            print(f"{devices:4d} devices: the fit's intercept ({fixed / GIB:.2f} GiB) is below the arguments "
                  f"({arguments / GIB:.2f} GiB): memory grows faster than linearly in the batch, so the fitting "
                  "batches above are optimistic; trust only measured points", flush=True)
        if args.verify and fits[max(MEMORY_SIZES_GIB)] >= 1 and devices == meshes[-1]:
            batch = fits[max(MEMORY_SIZES_GIB)]
            row = compile_point(args.size, args.frames, devices, batch, args.remat, workdir,
                                topology_of.get(devices, ""))
            summary["verified"] = {"devices": devices, "batch": batch, "peak_bytes": row["peak_bytes"]}
            print(f"{devices:4d} devices, batch/device {batch}: peak {row['peak_bytes'] / GIB:.2f} GiB "
                  f"[measured, verifies the {max(MEMORY_SIZES_GIB):g} GiB prediction]")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(summary, file, indent=1)


if __name__ == "__main__":
    main()
