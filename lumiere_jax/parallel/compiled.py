"""Per-device FLOPs and memory of a compiled SPMD program, read from XLA's cost and memory analyses, and the
needed-vs-available memory of a compile the TPU compiler refused (RESOURCE_EXHAUSTED)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

_UNITS = {"": 1, "B": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


@dataclasses.dataclass(frozen=True)
class CompiledCost:
    """Per-device figures of one compiled program (XLA partitions the step; each device runs this)."""

    flops: float
    bytes_accessed: float
    optimal_seconds: float | None  # the TPU cost model's estimate of the step time; None elsewhere
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    generated_code_bytes: int

    @property
    def peak_bytes(self) -> int:
        """Live memory at the peak as XLA plans it: arguments + outputs - donated (aliased) + temporaries + code."""
        return (self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes
                + self.generated_code_bytes)

    def summary(self) -> dict:
        return {**dataclasses.asdict(self), "peak_bytes": self.peak_bytes}


def cost_dict(compiled: Any) -> dict:
    """`compiled.cost_analysis()` as one dict ({} where the backend has no cost model)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 -- some backends have no cost model
        return {}
    if isinstance(cost, (list, tuple)):  # older JAX returned one dict per program
        cost = cost[0] if cost else None
    return dict(cost or {})


def compiled_cost(compiled: Any) -> CompiledCost:
    """Reads XLA's cost and memory analyses of a compiled program."""
    cost = cost_dict(compiled)
    memory = compiled.memory_analysis()
    optimal = cost.get("optimal_seconds")
    return CompiledCost(
        flops=float(cost.get("flops", 0.0)),
        bytes_accessed=float(cost.get("bytes accessed", 0.0)),
        optimal_seconds=None if optimal is None or optimal <= 0 else float(optimal),
        argument_bytes=int(memory.argument_size_in_bytes),
        output_bytes=int(memory.output_size_in_bytes),
        alias_bytes=int(memory.alias_size_in_bytes),
        temp_bytes=int(memory.temp_size_in_bytes),
        generated_code_bytes=int(memory.generated_code_size_in_bytes),
    )


@dataclasses.dataclass(frozen=True)
class OutOfMemory:
    """A compile refused for memory: what the program needs and what the chip offers, per device."""

    needed_bytes: float
    available_bytes: float
    what: str  # which figure the compiler compared ("program", "HLO temporaries", ...)
    message: str  # the compiler's line

    def describe(self) -> str:
        return (f"does not fit: {self.what} need {self.needed_bytes / 2 ** 30:.2f} GiB > "
                f"{self.available_bytes / 2 ** 30:.2f} GiB available per chip (compiler: {self.message})")


def _bytes(number: str, unit: str) -> float:
    return float(number) * _UNITS[unit.upper()[:1]] if unit else float(number)


# The TPU compiler's wordings (XLA error code E1000): "Used 49.34G of 32.00G hbm", "the total memory required
# for HLO temporaries (64.00G) exceeds available HBM (31.25G)", "Hbm usage: 34.82G, ... exceeding available
# bytes: 95.74G".
_SIZE = r"([0-9.]+)\s*([KMGT]i?B?|B)?"
_PATTERNS = (
    (re.compile(rf"Used {_SIZE} of {_SIZE} hbm", re.IGNORECASE), "program"),
    (re.compile(rf"memory required for ([\w ]+?) \({_SIZE}\) exceeds available HBM \({_SIZE}\)", re.IGNORECASE),
     None),
    (re.compile(rf"Hbm usage: {_SIZE}.*?exceeding available bytes: {_SIZE}", re.IGNORECASE | re.DOTALL),
     "TensorCore HBM"),
)


def parse_out_of_memory(error: BaseException | str) -> OutOfMemory | None:
    """The needed and available bytes in a RESOURCE_EXHAUSTED compile error; None for any other error."""
    text = str(error)
    if "RESOURCE_EXHAUSTED" not in text and "out of memory" not in text.lower():
        return None
    for pattern, what in _PATTERNS:
        match = pattern.search(text)
        if not match:
            continue
        groups = match.groups()
        if what is None:
            what, groups = groups[0], groups[1:]
        line = next((line.strip() for line in text.splitlines() if match.group(0).split("\n")[0] in line),
                    match.group(0))
        return OutOfMemory(_bytes(groups[0], groups[1]), _bytes(groups[2], groups[3]), what, line)
    return None
