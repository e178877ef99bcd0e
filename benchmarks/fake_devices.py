"""Asks XLA for N fake CPU devices (for compile-only analysis); must run before the first `import jax`."""

from __future__ import annotations

import os
import re
import sys

_FLAG = "--xla_force_host_platform_device_count"
# LLVM optimisation off: compile-only tools never run the program, and XLA's cost and memory analyses are
# HLO-level (on the tiny STUNet step: identical FLOPs and bytes with and without, ~30% less compile time).
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def request_cpu_devices(count: int, fast_compile: bool = True) -> None:
    """Sets `XLA_FLAGS` so the CPU backend exposes `count` devices (a fake mesh for compile-only analysis)."""
    if "jax" in sys.modules:
        raise RuntimeError(f"jax is already imported; request {count} fake CPU devices before importing jax "
                           "(set XLA_FLAGS=--xla_force_host_platform_device_count=N in the environment instead)")
    flags = re.sub(rf"{_FLAG}=\d+", "", os.environ.get("XLA_FLAGS", "")).strip()
    if fast_compile:
        flags = f"{flags} {FAST_COMPILE_FLAGS}"
    os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}={count}".strip()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
