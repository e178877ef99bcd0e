"""What a chip offers, for MFU and the fit planner: bfloat16 peak FLOP/s and HBM per device kind (gin:
`ChipSpecs`), a measured matmul rate where the table has no entry (CPU), and the devices of a TPU topology
compiled for from a machine without TPUs (libtpu, see lumiere_jax/plan.py).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping

import gin
import jax
import jax.numpy as jnp

GIB = 2.0 ** 30

# Dense bfloat16 peaks per chip (vendor figures). Keys are `jax.Device.device_kind` values or their prefixes.
PEAK_BF16_FLOPS: dict[str, float] = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,  # v5e
    "TPU v5": 459e12,  # v5p
    "TPU v6 lite": 918e12,  # v6e (Trillium)
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
}
# HBM per chip as the compiler offers it to a program (v6e and v4: 31.25 GiB of 32 GiB in libtpu's errors).
HBM_BYTES: dict[str, float] = {
    "TPU v4": 31.25 * GIB,
    "TPU v5 lite": 15.75 * GIB,
    "TPU v5": 95.74 * GIB,
    "TPU v6 lite": 31.25 * GIB,
    "NVIDIA H100": 80e9,
    "NVIDIA H200": 141e9,
}


def lookup(table: Mapping[str, float], device_kind: str) -> float | None:
    """The entry of `device_kind`: exact, else the longest key it starts with ("NVIDIA H100 80GB HBM3")."""
    if device_kind in table:
        return table[device_kind]
    prefixes = sorted((key for key in table if device_kind.startswith(key)), key=len, reverse=True)
    return table[prefixes[0]] if prefixes else None


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ChipSpecs:
    """Per-chip figures that MFU and the planner divide by.

    Attributes:
      peak_flops: device kind (or prefix) -> bfloat16 peak FLOP/s; kinds not listed (CPU) use a measured
        float32 matmul rate (`measured_matmul_flops`).
      hbm_bytes: device kind (or prefix) -> memory a program may use.
      headroom: fraction of HBM a step may plan to use (the rest: fragmentation, runtime buffers).
    """

    peak_flops: Mapping[str, float] = dataclasses.field(default_factory=lambda: dict(PEAK_BF16_FLOPS))
    hbm_bytes: Mapping[str, float] = dataclasses.field(default_factory=lambda: dict(HBM_BYTES))
    headroom: float = 0.85

    def peak(self, device_kind: str) -> tuple[float, str]:
        """`(FLOP/s, where it comes from)`: the table's bfloat16 peak, else a matmul measured now."""
        peak = lookup(self.peak_flops, device_kind)
        if peak is not None:
            return peak, "bf16 peak table"
        return measured_matmul_flops(), "measured float32 matmul"

    def hbm(self, device_kind: str) -> float | None:
        return lookup(self.hbm_bytes, device_kind)


def time_best(fn, *args, repeats: int) -> float:
    """Fastest of `repeats` timed calls (after one warm-up call that also compiles), in seconds."""
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def matmul_flops_per_second(size: int, repeats: int = 5, dtype=jnp.float32) -> float:
    """FLOP/s of the best of `repeats` `[size, size] @ [size, size]` products (2 * size^3 FLOPs each)."""
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (size, size), dtype)
    b = jax.random.normal(key_b, (size, size), dtype)
    seconds = time_best(jax.jit(jnp.matmul), a, b, repeats=repeats)
    return 2.0 * size ** 3 / seconds


def measured_matmul_flops(sizes: tuple[int, ...] = (1024,), repeats: int = 3) -> float:
    """Best float32 matmul FLOP/s over `sizes` on the default device: the practical peak of a CPU (1024^3
    reaches it here within a few % of 2048^3 at an eighth of the time, which every trainer start pays)."""
    return max(matmul_flops_per_second(size, repeats) for size in sizes)


def topology_devices(topology: str) -> list:
    """The devices of a TPU `topology` ("v5:2x2x1" for v5p, "v6e:2x2", "v5e:2x4", "v4:2x2x1") to compile for
    on a machine without TPUs; needs libtpu importable (lumiere_jax/plan.py shows how to install it)."""
    generation, _, shape = topology.partition(":")
    dims = shape.split("x")
    if not generation.startswith("v") or not shape or not all(dim.isdigit() and int(dim) > 0 for dim in dims):
        raise ValueError(f"bad topology {topology!r}: write GENERATION:AxB[xC] with a TPU generation and chip "
                         "counts per axis, e.g. v5:2x2x1 (v5p), v6e:2x2, v5e:2x4, v4:2x2x1")
    # No TPU here: libtpu must not wait for a metadata server that does not answer.
    for name, value in (("TPU_SKIP_MDS_QUERY", "1"), ("TPU_WORKER_HOSTNAMES", "localhost")):
        os.environ.setdefault(name, value)
    from jax.experimental import topologies  # noqa: PLC0415 -- TPU targets only, after the settings above
    try:
        return list(topologies.get_topology_desc(topology, "tpu").devices)
    except Exception as error:  # noqa: BLE001 -- libtpu raises bare RuntimeErrors/XlaRuntimeErrors
        raise ValueError(f"cannot compile for topology {topology!r}: {error}. Check the topology string "
                         "(e.g. v5:2x2x1, v6e:2x2) and that libtpu is installed (PYTHONPATH=.bench_libtpu, "
                         "see lumiere_jax/plan.py)") from None
