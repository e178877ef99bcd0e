"""Where a train step's time goes on CPU: a `jax.profiler` trace of the benchmark step, its per-op times summed over
XLA:CPU's worker threads and grouped by kind (convolution forward / input gradient / weight gradient, dot,
transpose, reduction, elementwise) and by the model layer named in the compiled HLO's metadata.

    python -m benchmarks.step_profile --size tiny --stage stunet
    python -m benchmarks.step_profile --size small --stage stunet --base_channels 64 --steps 2

Per-op times are wall-clock spans of each op on its thread: on a loaded machine they include preemption, so read
the shares, not the seconds.
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import re
import tempfile
import time

import jax

from benchmarks import minimal_step, train_step
from lumiere_jax import storage
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.parallel import runtime

TRACE_OPS_FLAG = "--xla_cpu_enable_xprof_traceme=true"  # XLA:CPU records one trace event per op

INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\S+) ([\w-]+)\(")


def instructions(hlo_text: str) -> dict[str, tuple[str, str, str]]:
    """`name -> (shape, opcode, text of the op and of the computation it calls)` for every HLO instruction."""
    computations, current = {}, None
    for line in hlo_text.splitlines():
        header = re.match(r"^(?:ENTRY )?%(\S+) .*\{$", line)
        if header:
            current = computations.setdefault(header.group(1), [])
        elif current is not None:
            current.append(line)
    found = {}
    for lines in computations.values():
        for line in lines:
            match = INSTRUCTION.match(line)
            if match:
                called = re.search(r"calls=%([\w.\-]+)", line)
                body = "\n".join(computations.get(called.group(1), [])) if called else ""
                found[match.group(1)] = (match.group(2), match.group(3), line + "\n" + body)
    return found


def op_kind(opcode: str, text: str) -> str:
    """Kind of one compiled op. A convolution whose window exceeds 7 taps is a weight gradient (XLA writes it as a
    convolution of the activations with the output gradient, windowed by the image): one over 7 frames or pixels
    or fewer is counted as an input gradient."""
    backward = "transpose(jvp" in text
    if "convolution(" in text:
        window = re.search(r"window=\{size=(\d+)", text)
        if window and int(window.group(1)) > 7:
            return "conv weight gradient"
        return "conv input gradient" if backward else "conv forward"
    if " dot(" in text:
        return "dot backward" if backward else "dot forward"
    if "reduce(" in text:
        return "reduction fusion"
    if opcode in ("transpose", "copy") or re.search(r"\b(transpose|copy)\(", text):
        return "transpose / copy"
    if re.search(r"\b(concatenate|slice|pad|dynamic-slice|dynamic-update-slice)\(", text):
        return "concatenate / slice / pad"
    return "elementwise / other"


def layer_of(text: str) -> str:
    """The model layer in the op's metadata, block indices dropped: 'up_res/conv', 'down_temporal_conv', ..."""
    name = re.search(r'op_name="([^"]+)"', text)
    parts = [part for part in name.group(1).split("/")[2:-1] if "(" not in part] if name else []
    return re.sub(r"_\d+", "", "/".join(parts)) or "(no metadata)"


def profile(size: str, stage: str, base_channels: int | None, steps: int) -> tuple[dict, dict, float, float]:
    """Per-kind and per-(kind, layer) op seconds per step, and the wall and CPU seconds per traced step."""
    config = train_step.stage_config(size, stage, "float32", base_channels)
    mesh = mesh_lib.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    setup = minimal_step.setup(config, mesh, train_step.BATCHES[size][stage], video=stage == "stunet",
                               freeze_spatial=stage == "stunet")
    with mesh_lib.mesh_context(mesh):
        compiled = setup.jitted().lower(*setup.args).compile()
    ops = instructions(compiled.as_text())
    state = list(setup.concrete_args())

    def step():
        state[0], state[2], loss = compiled(*state)
        jax.block_until_ready(loss)

    step()
    trace_dir = tempfile.mkdtemp(prefix="step_profile_")
    wall, cpu = time.perf_counter(), time.process_time()
    with jax.profiler.trace(trace_dir):
        for _ in range(steps):
            step()
    wall, cpu = (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps
    trace = next(pathlib.Path(trace_dir).rglob("*.xplane.pb"))  # a local temporary folder
    data = jax.profiler.ProfileData.from_serialized_xspace(storage.read_bytes(trace))
    by_kind, by_layer = collections.Counter(), collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if "XLAEigen" not in line.name:  # XLA:CPU's worker threads run the ops
                continue
            for event in line.events:
                if event.name in ops:
                    _, opcode, text = ops[event.name]
                    kind = op_kind(opcode, text)
                    by_kind[kind] += event.duration_ns / 1e9 / steps
                    by_layer[(kind, layer_of(text))] += event.duration_ns / 1e9 / steps
    return by_kind, by_layer, wall, cpu


def main() -> None:
    runtime.configure_cpu_flags()  # the trainer's XLA:CPU flags (before XLA starts)
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TRACE_OPS_FLAG}"  # before XLA starts
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--stage", default="stunet")
    parser.add_argument("--base_channels", type=int, default=None)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=20, help="(kind, layer) rows to print")
    args = parser.parse_args()
    by_kind, by_layer, wall, cpu = profile(args.size, args.stage, args.base_channels, args.steps)
    total = sum(by_kind.values())
    print(f"{args.size} {args.stage}: traced step {wall:.2f} s wall, {cpu:.2f} s CPU; op time summed over threads "
          f"{total:.2f} s; load average {os.getloadavg()[0]:.1f}")
    for kind, seconds in by_kind.most_common():
        print(f"  {seconds:8.3f} s {100 * seconds / total:5.1f}%  {kind}")
    for (kind, layer), seconds in by_layer.most_common(args.top):
        print(f"  {seconds:8.3f} s {100 * seconds / total:5.1f}%  {kind:26s} {layer}")


if __name__ == "__main__":
    main()
