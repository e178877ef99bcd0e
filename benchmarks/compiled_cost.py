"""Compile-only FLOPs and per-device memory of a jitted step, read from XLA's cost and memory analyses.

Targets: the CPU backend (fake devices from `fake_devices.request_cpu_devices`) or a TPU topology compiled
on this CPU-only machine through libtpu (`jax.experimental.topologies`, no TPU needed). Nothing is executed.
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax

from benchmarks import minimal_step
from lumiere_jax.parallel import mesh as mesh_lib


def target_devices(target: str, topology: str = "") -> list:
    """Devices to build the mesh on: the CPU backend's (fake) devices, or those of a TPU `topology` like "v5:2x2x1"."""
    if target == "cpu":
        return jax.devices("cpu")
    if target == "tpu":
        if not topology:
            raise ValueError("target 'tpu' needs a topology, e.g. --topology v5:2x2x1 (v5p) or v6e:2x4")
        # No TPU here: skip libtpu's metadata-server lookups (they wait for a server that does not answer).
        for name, value in (("TPU_SKIP_MDS_QUERY", "1"), ("TPU_WORKER_HOSTNAMES", "localhost")):
            os.environ.setdefault(name, value)
        from jax.experimental import topologies  # noqa: PLC0415 -- TPU targets only, after the libtpu settings above
        return list(topologies.get_topology_desc(topology, "tpu").devices)
    raise ValueError(f"unknown target {target!r}; choose 'cpu' or 'tpu'")


@dataclasses.dataclass(frozen=True)
class CompiledCost:
    """Per-device figures of one compiled SPMD program (XLA partitions the step; each device runs this)."""

    flops: float
    bytes_accessed: float
    optimal_seconds: float | None  # TPU cost model only
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    generated_code_bytes: int
    compile_seconds: float

    @property
    def peak_bytes(self) -> int:
        """Live memory at the peak as XLA plans it: arguments + outputs - donated (aliased) + temporaries + code."""
        return (self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes
                + self.generated_code_bytes)

    def summary(self) -> dict:
        fields = dataclasses.asdict(self)
        fields["peak_bytes"] = self.peak_bytes
        return fields


def _cost_dict(compiled) -> dict:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX returned one dict per program
        cost = cost[0]
    return dict(cost or {})


def compile_step(setup: minimal_step.StepSetup) -> CompiledCost:
    """Lowers and compiles the step with its shardings (no execution) and reads XLA's analyses."""
    start = time.perf_counter()
    with mesh_lib.mesh_context(setup.mesh):
        compiled = setup.jitted().lower(*setup.args).compile()
    seconds = time.perf_counter() - start
    cost = _cost_dict(compiled)
    memory = compiled.memory_analysis()
    optimal = cost.get("optimal_seconds")
    return CompiledCost(
        flops=float(cost.get("flops", 0.0)),
        bytes_accessed=float(cost.get("bytes accessed", 0.0)),
        optimal_seconds=None if optimal is None else float(optimal),
        argument_bytes=int(memory.argument_size_in_bytes),
        output_bytes=int(memory.output_size_in_bytes),
        alias_bytes=int(memory.alias_size_in_bytes),
        temp_bytes=int(memory.temp_size_in_bytes),
        generated_code_bytes=int(memory.generated_code_size_in_bytes),
        compile_seconds=seconds,
    )
