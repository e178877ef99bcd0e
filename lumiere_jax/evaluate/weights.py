"""Converted feature-network weights: flat `{"a/b/kernel": array}` files (.safetensors or .npz) <-> Flax params.

The converters (`convert.py`) write these files from the public checkpoints; `load_params` fills a module's
parameter tree from one and refuses a file that does not map completely (missing, unused or mis-shaped keys).
Variable collections other than "params" (BatchNorm statistics) use a `<collection>:` prefix, e.g.
`batch_stats:Conv3d_1a_7x7/bn/mean`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from flax import traverse_util
from safetensors.numpy import load_file, save_file

SEPARATOR = "/"
COLLECTION_SEPARATOR = ":"


def save_flat(path: str, flat: dict[str, np.ndarray]) -> None:
    """Writes a flat dict of arrays as .safetensors or .npz (chosen by the extension)."""
    arrays = {name: np.array(value, order="C") for name, value in flat.items()}  # keeps 0-d arrays 0-d
    if path.endswith(".safetensors"):
        save_file(arrays, path)
    elif path.endswith(".npz"):
        np.savez(path, **arrays)
    else:
        raise ValueError(f"{path!r}: weights files end in .safetensors or .npz")


def load_flat(path: str) -> dict[str, np.ndarray]:
    """Reads a flat dict of arrays from .safetensors or .npz."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path!r} does not exist; convert the public checkpoint with "
                                "`python -m lumiere_jax.evaluate.convert` (see its --help)")
    if path.endswith(".safetensors"):
        return dict(load_file(path))
    if path.endswith(".npz"):
        with np.load(path) as data:
            return {name: data[name] for name in data.files}
    raise ValueError(f"{path!r}: weights files end in .safetensors or .npz")


def flatten_variables(variables: Any) -> dict[str, Any]:
    """`{"params": {...}, "batch_stats": {...}}` -> flat names (params unprefixed, other collections prefixed)."""
    flat = {}
    for collection, tree in variables.items():
        prefix = "" if collection == "params" else collection + COLLECTION_SEPARATOR
        for path, leaf in traverse_util.flatten_dict(tree, sep=SEPARATOR).items():
            flat[prefix + path] = leaf
    return flat


def unflatten_variables(flat: dict[str, Any]) -> dict[str, Any]:
    collections: dict[str, dict] = {}
    for name, value in flat.items():
        collection, _, path = name.rpartition(COLLECTION_SEPARATOR)
        collections.setdefault(collection or "params", {})[path] = value
    return {collection: traverse_util.unflatten_dict(tree, sep=SEPARATOR) for collection, tree in collections.items()}


def check_complete(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], what: str) -> None:
    """Raises naming every missing, unused or mis-shaped key."""
    missing = sorted(set(expected) - set(found))
    unused = sorted(set(found) - set(expected))
    mismatched = [f"{name}: file {tuple(found[name])} != model {tuple(expected[name])}"
                  for name in sorted(set(expected) & set(found)) if tuple(found[name]) != tuple(expected[name])]
    if missing or unused or mismatched:
        raise ValueError(
            f"{what} does not match the model: {len(missing)} missing {missing}, {len(unused)} unused {unused}, "
            f"{len(mismatched)} mis-shaped {mismatched}. Convert the checkpoint with the matching converter and "
            "model config (python -m lumiere_jax.evaluate.convert)")


def load_variables(flat: dict[str, np.ndarray], abstract_variables: Any, what: str = "weights") -> dict[str, Any]:
    """Fills `abstract_variables` (e.g. from `jax.eval_shape(module.init, ...)`) from a flat dict, strictly."""
    expected = {name: tuple(leaf.shape) for name, leaf in flatten_variables(abstract_variables).items()}
    check_complete(expected, {name: value.shape for name, value in flat.items()}, what)
    dtypes = {name: leaf.dtype for name, leaf in flatten_variables(abstract_variables).items()}
    return unflatten_variables({name: np.asarray(flat[name], dtypes[name]) for name in expected})
