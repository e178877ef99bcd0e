"""Where a training run keeps its checkpoints, and what a checkpoint must match to load into a model.

Written by the trainer (train/checkpoints.py) and read by sampling, export and evaluation:
`MODEL_DIR/checkpoints/<step>/{state, meta, data}`; a step is usable once Orbax committed its `state` item.
"""

from __future__ import annotations

from typing import Any

from lumiere_jax import storage
from lumiere_jax.models import param_paths

CHECKPOINTS_SUBDIR = "checkpoints"


def model_signature(params: Any) -> dict[str, list[int]]:
    """`{param path: shape}` of a (possibly abstract) parameter tree: what must match to resume."""
    return {path: list(leaf.shape) for path, leaf in sorted(param_paths.flatten(params).items())}


def signature_mismatch(expected: dict[str, list[int]], found: dict[str, list[int]]) -> list[str]:
    """Human-readable differences between two signatures (empty when they match)."""
    problems = [f"missing {path}" for path in sorted(set(expected) - set(found))]
    problems += [f"unexpected {path}" for path in sorted(set(found) - set(expected))]
    problems += [f"{path}: shape {found[path]} != {expected[path]}"
                 for path in sorted(set(expected) & set(found)) if found[path] != expected[path]]
    return problems


def resolve_step_directory(path: str) -> str:
    """A step directory (holding `state/`) from a run directory, a checkpoints directory or a step directory."""
    path = storage.normalize(path)
    if storage.isdir(storage.join(path, "state")):
        return path
    if storage.isdir(storage.join(path, CHECKPOINTS_SUBDIR)):
        path = storage.join(path, CHECKPOINTS_SUBDIR)
    steps = sorted((int(name) for name in storage.listdir(path) if name.isdigit()), reverse=True)
    for step in steps:
        candidate = storage.join(path, str(step))
        if storage.exists(storage.join(candidate, "state", "commit_success.txt")) or storage.exists(
                storage.join(candidate, "state", "_METADATA")):
            return candidate
    raise FileNotFoundError(f"no checkpoint found at {path!r} to initialise from; give a run directory, its "
                            "checkpoints/ directory or one step directory (CheckpointConfig.init_from)")
