"""Host-local batches -> global `jax.Array`s split over the data-parallel mesh axes, with prefetch.

Every host feeds its own slice of the global batch (`batch_size / process_count` examples);
`jax.make_array_from_process_local_data` stitches the slices into one array whose leading (batch)
dimension is sharded over ("data", "fsdp") and whose other dimensions are replicated.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Mapping

import jax
import numpy as np

from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.parallel import partitioning


def make_global_batch(
    local_batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh,
) -> dict[str, jax.Array]:
    """Assembles each host-local array [b, ...] into a global jax.Array [b * process_count, ...]."""
    sharding = partitioning.batch_sharding(mesh)  # one spec for every rank: it names the leading dimension only
    local_sizes = {local.shape[0] for local in local_batch.values()}
    if len(local_sizes) != 1:
        raise ValueError(f"batch features disagree on the batch size: {local_sizes}")
    global_size = local_sizes.pop() * jax.process_count()
    mesh_lib.check_batch_divisible(global_size, mesh)
    return {
        key: jax.make_array_from_process_local_data(sharding, local, (global_size, *local.shape[1:]))
        for key, local in local_batch.items()}


class GlobalBatchIterator:
    """Wraps a host-local batch iterator: yields global arrays, keeping `prefetch` batches on device.

    `get_state()` reports the position of the last batch handed out, not of the prefetched ones, so
    a checkpoint taken after step k resumes at step k. `set_state` drops the prefetched batches.
    When the local iterator has snapshots (`data.pipeline.DataIterator`), `save_snapshot(directory)`
    saves it with the prefetched host-local batches, so the snapshot also resumes at step k, and
    `set_state(state, snapshot_dir)` resumes from one.
    """

    def __init__(self, local_iterator, mesh: jax.sharding.Mesh, prefetch: int = 2):
        self._local = local_iterator
        self._mesh = mesh
        self._prefetch = prefetch
        self._queue: collections.deque = collections.deque()  # (global batch, host-local batch, state)
        self._state = local_iterator.get_state()

    @property
    def supports_snapshots(self) -> bool:
        return hasattr(self._local, "save_snapshot")

    def __iter__(self) -> Iterator[dict[str, jax.Array]]:
        return self

    def _fill(self) -> None:
        while len(self._queue) <= self._prefetch:
            try:
                local_batch = next(self._local)
            except StopIteration:
                return
            # The transfer is asynchronous: arrays are queued while the device copies run.
            self._queue.append(
                (make_global_batch(local_batch, self._mesh), local_batch, self._local.get_state()))

    def __next__(self) -> dict[str, jax.Array]:
        self._fill()
        if not self._queue:
            raise StopIteration
        batch, _, self._state = self._queue.popleft()
        return batch

    def get_state(self) -> dict:
        return dict(self._state)

    def set_state(self, state: dict, snapshot_dir: str | None = None, require_commit: bool = True) -> None:
        """Resumes at `state`; from the snapshot in `snapshot_dir` when given and the local iterator has them
        (`require_commit=False` also reads snapshots written before commit markers existed)."""
        self._queue.clear()
        if snapshot_dir is not None and self.supports_snapshots:
            self._local.set_state(state, snapshot_dir, require_commit)
        else:
            self._local.set_state(state)
        self._state = self._local.get_state()

    def save_snapshot(self, directory: str) -> str:
        """Writes the local iterator's snapshot at the position of `get_state()`; returns its path."""
        if not self.supports_snapshots:
            raise TypeError(f"{type(self._local).__name__} has no save_snapshot; resume it with set_state")
        return self._local.save_snapshot(directory, pending=[local for _, local, _ in self._queue])
