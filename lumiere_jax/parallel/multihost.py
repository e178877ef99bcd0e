"""Decisions every host must share: process 0's view broadcast, agreement on success, barriers.

Each is a no-op on one process. On several, every host must call it at the same point (they are collectives).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils


def from_first_host(values: np.ndarray) -> np.ndarray:
    """Process 0's `values` on every host (same shape and dtype everywhere), e.g. one host's listing of a bucket."""
    if jax.process_count() == 1:
        return np.asarray(values)
    return np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(values)))


def ints_from_first_host(values: list[int]) -> list[int]:
    """Process 0's list of integers (any length) on every host."""
    if jax.process_count() == 1:
        return list(values)
    count = int(from_first_host(np.int64(len(values))))
    mine = np.asarray(values, np.int64) if jax.process_index() == 0 else np.zeros(count, np.int64)
    return [int(value) for value in from_first_host(mine)] if count else []


def all_hosts_agree(ok: bool) -> bool:
    """True only if `ok` holds on every host."""
    if jax.process_count() == 1:
        return ok
    return bool(np.min(multihost_utils.process_allgather(np.int32(ok))))


def barrier(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
