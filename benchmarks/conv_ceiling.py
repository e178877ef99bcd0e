"""The ceiling XLA:CPU's convolution kernels put on a train step's FLOP rate.

Every convolution of the benchmark step (`minimal_step`: forward, input gradient, weight gradient, read from the
step's jaxpr) is compiled and timed alone at its own shape and settings. If the step ran each convolution as fast
as it runs alone and everything else (norms, activations, attention, the optimizer) took no time, it would take
`sum(count x seconds alone)`; its ratio to the float32 matmul of the same process could then be at most

    ceiling = FLOPs of the whole step / sum(count x seconds alone) / best matmul FLOP/s.

A step whose convolutions run at half the matmul rate alone cannot reach 0.7 of it, whatever the rest costs.

    python -m benchmarks.conv_ceiling --size tiny --stage stunet
    python -m benchmarks.conv_ceiling --size small --stage stunet --base_channels 64
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import math
import os
import time

import jax
from jax import lax

from benchmarks import matmul_peak, minimal_step, model_flops, train_step
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.parallel import runtime

KINDS = ("forward", "input gradient", "weight gradient")


@dataclasses.dataclass(frozen=True)
class Convolution:
    """One distinct convolution of a step: its operands' shapes and dtypes and the primitive's settings."""

    kind: str
    lhs: jax.ShapeDtypeStruct
    rhs: jax.ShapeDtypeStruct
    params: tuple  # sorted (name, value) pairs of the `conv_general_dilated` equation

    def call(self):
        """A compiled call of this convolution alone on random operands: `(call, XLA's FLOP count)`."""
        params = dict(self.params)
        jitted = jax.jit(lambda lhs, rhs: lax.conv_general_dilated_p.bind(lhs, rhs, **params))
        key_lhs, key_rhs = jax.random.split(jax.random.key(0))
        lhs = jax.random.normal(key_lhs, self.lhs.shape, self.lhs.dtype)
        rhs = jax.random.normal(key_rhs, self.rhs.shape, self.rhs.dtype)
        compiled = jitted.lower(lhs, rhs).compile()
        jax.block_until_ready(compiled(lhs, rhs))
        return (lambda: compiled(lhs, rhs)), model_flops.compiled_flops(compiled)


def conv_kind(name_stack: str, lhs_spatial: tuple[int, ...], out_spatial: tuple[int, ...]) -> str:
    """Forward convolutions are traced outside any transpose. In the backward pass the weight gradient convolves
    the activations with the output gradient into the (small) kernel window; the input gradient gives an
    activation-sized output."""
    if "transpose" not in name_stack:
        return "forward"
    return "weight gradient" if 4 * math.prod(out_spatial) <= math.prod(lhs_spatial) else "input gradient"


def step_convolutions(step, args) -> collections.Counter:
    """`Counter[Convolution]` of every `conv_general_dilated` in the jaxpr of `step(*args)`, nested ones included."""
    found = collections.Counter()

    def walk(jaxpr, name_stack: str):
        for eqn in jaxpr.eqns:
            stack = f"{name_stack}/{eqn.source_info.name_stack}"
            if eqn.primitive is lax.conv_general_dilated_p:
                lhs, rhs = (jax.ShapeDtypeStruct(var.aval.shape, var.aval.dtype) for var in eqn.invars)
                numbers = eqn.params["dimension_numbers"]
                out_shape = eqn.outvars[0].aval.shape
                kind = conv_kind(stack, tuple(lhs.shape[axis] for axis in numbers.lhs_spec[2:]),
                                 tuple(out_shape[axis] for axis in numbers.out_spec[2:]))
                found[Convolution(kind, lhs, rhs, tuple(sorted(eqn.params.items())))] += 1
            for value in eqn.params.values():
                for sub in value if isinstance(value, (list, tuple)) else (value,):
                    inner = getattr(sub, "jaxpr", None)
                    if inner is not None:
                        walk(inner if hasattr(inner, "eqns") else inner.jaxpr, stack)

    walk(jax.make_jaxpr(step)(*args).jaxpr, "")
    return found


def _best_seconds(call, repeats: int) -> tuple[float, float]:
    """Fastest wall and process CPU seconds of `call()` over `repeats` runs."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(call())
        wall = min(wall, time.perf_counter() - start_wall)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu


def ceiling(size: str, stage: str, base_channels: int | None, repeats: int) -> dict:
    """Times every distinct convolution of the stage's step alone and the matmul reference in the same process."""
    config = train_step.stage_config(size, stage, "float32", base_channels)
    mesh = mesh_lib.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    setup = minimal_step.setup(config, mesh, train_step.BATCHES[size][stage], video=stage == "stunet",
                               freeze_spatial=stage == "stunet")
    with mesh_lib.mesh_context(mesh):
        convolutions = step_convolutions(setup.step, setup.args)
    per_kind = {kind: dict(count=0, flops=0.0, seconds=0.0, cpu_seconds=0.0) for kind in KINDS}
    rows = []
    for convolution, count in sorted(convolutions.items(), key=lambda item: (KINDS.index(item[0].kind),
                                                                              item[0].lhs.shape)):
        call, flops = convolution.call()
        seconds, cpu_seconds = _best_seconds(call, repeats)
        totals = per_kind[convolution.kind]
        totals["count"] += count
        totals["flops"] += count * flops
        totals["seconds"] += count * seconds
        totals["cpu_seconds"] += count * cpu_seconds
        rows.append(dict(kind=convolution.kind, lhs=convolution.lhs.shape, rhs=convolution.rhs.shape, count=count,
                         flops=flops, seconds=seconds))
    peak = peak_cpu = 0.0
    for _ in range(repeats):
        for call, flops in (matmul_peak.matmul_call(n) for n in matmul_peak.DEFAULT_SIZES):
            seconds, cpu_seconds = _best_seconds(call, 2)
            peak, peak_cpu = max(peak, flops / seconds), max(peak_cpu, flops / cpu_seconds)
    with mesh_lib.mesh_context(mesh):
        step_flops = model_flops.compiled_flops(setup.jitted().lower(*setup.args).compile())
    return dict(per_kind=per_kind, rows=rows, step_flops=step_flops, matmul_peak=peak, matmul_peak_cpu=peak_cpu)


def ceiling_ratio(step_flops: float, conv_seconds: float, matmul_flops_per_second: float) -> float:
    """The step's FLOP rate over the matmul's if only its convolutions took time, each as long as alone."""
    return step_flops / conv_seconds / matmul_flops_per_second


def main() -> None:
    runtime.configure_cpu_flags()  # the trainer's XLA:CPU flags (before XLA starts)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny", choices=tuple(train_step.BATCHES))
    parser.add_argument("--stage", default="stunet", choices=("t2i", "stunet"))
    parser.add_argument("--base_channels", type=int, default=None, help="override the preset's base channels")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each convolution; the best is kept")
    parser.add_argument("--verbose", action="store_true", help="also print every distinct convolution")
    args = parser.parse_args()
    result = ceiling(args.size, args.stage, args.base_channels, args.repeats)
    peak, peak_cpu = result["matmul_peak"], result["matmul_peak_cpu"]
    print(f"{jax.devices()[0].device_kind}; {args.size} {args.stage}"
          f"{f' base {args.base_channels}' if args.base_channels else ''}: step {result['step_flops'] / 1e9:.1f} "
          f"GFLOP; best float32 matmul {peak / 1e9:.0f} GFLOP/s (CPU time: {peak_cpu / 1e9:.0f}); load average "
          f"{os.getloadavg()[0]:.1f}")
    if args.verbose:
        for row in result["rows"]:
            rate = row["flops"] / row["seconds"]
            print(f"  {row['kind']:15s} {row['lhs']} * {row['rhs']} x{row['count']}: {row['seconds'] * 1e3:.2f} ms, "
                  f"{rate / 1e9:.0f} GFLOP/s = {rate / peak:.2f} of the matmul")
    total_flops = total_seconds = total_cpu = 0.0
    print("| convolutions | count | GFLOP (share of the step) | s alone | GFLOP/s alone | of the matmul | cores busy |")
    print("|---|---|---|---|---|---|---|")
    for kind, totals in result["per_kind"].items():
        if not totals["count"]:
            continue
        total_flops += totals["flops"]
        total_seconds += totals["seconds"]
        total_cpu += totals["cpu_seconds"]
        rate = totals["flops"] / totals["seconds"]
        print(f"| {kind} | {totals['count']} | {totals['flops'] / 1e9:.2f} "
              f"({totals['flops'] / result['step_flops']:.0%}) | {totals['seconds']:.4f} | {rate / 1e9:.0f} | "
              f"{rate / peak:.2f} | {totals['cpu_seconds'] / totals['seconds']:.1f} |")
    print(f"Convolutions: {total_flops / result['step_flops']:.0%} of the step's FLOPs, {total_seconds:.4f} s alone "
          f"(cores busy {total_cpu / total_seconds:.1f}; the matmul {peak / peak_cpu:.1f}). Ceiling of the step's "
          f"ratio to the matmul if nothing else took time: "
          f"{ceiling_ratio(result['step_flops'], total_seconds, peak):.2f}")


if __name__ == "__main__":
    main()
