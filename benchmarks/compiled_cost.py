"""Compile-only FLOPs and per-device memory of a benchmark step, read from XLA's cost and memory analyses
(`lumiere_jax.parallel.compiled`, which the fit planner and the trainer use too).

Targets: the CPU backend (fake devices from `fake_devices.request_cpu_devices`) or a TPU topology compiled
on this CPU-only machine through libtpu (`lumiere_jax.parallel.chips.topology_devices`, no TPU needed).
Nothing is executed.
"""

from __future__ import annotations

import jax

from benchmarks import minimal_step
from lumiere_jax.parallel import chips
from lumiere_jax.parallel import compiled as compiled_lib
from lumiere_jax.parallel import mesh as mesh_lib


def target_devices(target: str, topology: str = "") -> list:
    """Devices to build the mesh on: the CPU backend's (fake) devices, or those of a TPU `topology` like "v5:2x2x1"."""
    if target == "cpu":
        return jax.devices("cpu")
    if target == "tpu":
        if not topology:
            raise ValueError("target 'tpu' needs a topology, e.g. --topology v5:2x2x1 (v5p) or v6e:2x4")
        return chips.topology_devices(topology)
    raise ValueError(f"unknown target {target!r}; choose 'cpu' or 'tpu'")


def compile_step(setup: minimal_step.StepSetup) -> compiled_lib.CompiledCost:
    """Lowers and compiles the step with its shardings (no execution) and reads XLA's analyses.

    Raises the compiler's error when it refuses the step; `lumiere_jax.parallel.compiled.parse_out_of_memory`
    reads needed vs available memory from a refusal for memory.
    """
    with mesh_lib.mesh_context(setup.mesh):
        compiled = setup.jitted().lower(*setup.args).compile()
    return compiled_lib.compiled_cost(compiled)
