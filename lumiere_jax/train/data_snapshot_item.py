"""The input pipeline's iterator snapshot as an item of the Orbax checkpoint step (`<step>/data/`).

One commit and one retention rule for the train state and the data position: the snapshot is written inside
the step Orbax is saving, so it is complete exactly when the step commits, and it goes when Orbax deletes the
step. Every host writes its own shard (`data.pipeline.snapshot_path`) during the save call (the iterator
state must be captured before training moves on); Orbax then commits the step once all hosts are done.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import orbax.checkpoint as ocp
from etils import epath

DATA_ITEM = "data"


class DataSnapshotHandler(ocp.CheckpointHandler):
    """Saving calls the iterator's `save_fn(item_directory)` on every host; restoring returns the committed
    item's directory, from which the iterator reads its own shard (it is built only after the state restores)."""

    def save(self, directory: epath.Path, args: DataSnapshotSave) -> None:
        args.save_fn(str(directory))

    def restore(self, directory: epath.Path, args: DataSnapshotRestore | None = None) -> str:
        if not directory.exists():
            raise FileNotFoundError(f"no input snapshot in {directory}")
        return str(directory)

    def metadata(self, directory: epath.Path) -> None:  # no metadata of its own
        return None


@ocp.args.register_with_handler(DataSnapshotHandler, for_save=True)
@dataclasses.dataclass
class DataSnapshotSave(ocp.args.CheckpointArgs):
    save_fn: Callable[[str], Any]


@ocp.args.register_with_handler(DataSnapshotHandler, for_restore=True)
@dataclasses.dataclass
class DataSnapshotRestore(ocp.args.CheckpointArgs):
    """Asks for the directory of a step's input snapshot."""
