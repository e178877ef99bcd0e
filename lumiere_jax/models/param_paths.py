"""Parameter trees by path: `{'a/b/kernel': leaf}` views of nested dicts, and which paths are temporal.

Paths are the Flax module paths of models/unet.py joined by "/"; checkpoints, inflation, style blending and
the trainable masks all address parameters this way.
"""

from __future__ import annotations

from typing import Any

import flax

Params = Any
SEPARATOR = "/"
TEMPORAL_MARKER = "temporal"  # Every STUNet-only submodule name contains it (models/unet.py).


def flatten(tree: Params) -> dict[str, Any]:
    """Nested dict -> {'a/b/kernel': leaf}."""
    return flax.traverse_util.flatten_dict(tree, sep=SEPARATOR) if tree else {}


def unflatten(flat: dict[str, Any]) -> Params:
    return flax.traverse_util.unflatten_dict(flat, sep=SEPARATOR) if flat else {}


def set_path(tree: dict, key_path: tuple[str, ...], value: Any) -> None:
    """Sets `tree[k0][k1]...[kn] = value`, creating the nested dicts on the way."""
    for key in key_path[:-1]:
        tree = tree.setdefault(key, {})
    tree[key_path[-1]] = value


def get_path(tree: dict, key_path: tuple[str, ...]) -> Any:
    """Returns `tree[k0][k1]...[kn]`."""
    for key in key_path:
        tree = tree[key]
    return tree


def is_temporal(path: str | tuple[str, ...]) -> bool:
    """Whether a parameter path ('a/b/kernel' or its tuple of names) belongs to a temporal (STUNet-only) module."""
    if not isinstance(path, str):
        path = SEPARATOR.join(path)
    return TEMPORAL_MARKER in path
