"""Shardings for parameter trees from their logical axis names.

`parallel/mesh.py` builds the mesh and holds the rules; this module applies them to whole trees (parameters,
optimizer state, batches) so the train step can be jitted with explicit in/out shardings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import NamedSharding, PartitionSpec

from lumiere_jax.parallel import mesh as mesh_lib

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]
BATCH_AXES: tuple[str, ...] = ("data", "fsdp")  # the data-parallel mesh axes a batch is split over

def logical_specs(boxed_tree: Any) -> Any:
    """PartitionSpecs over logical names for a tree of (possibly abstract) boxed values; unboxed leaves replicate.

    A logical name repeated within one array (e.g. a k x k kernel named ("conv_kernel", "conv_kernel", ...)) is
    kept on its first dimension only: one mesh axis cannot split two dimensions of the same array.
    """
    return jax.tree.map(_first_occurrences, nn.get_partition_spec(boxed_tree),
                        is_leaf=lambda leaf: isinstance(leaf, PartitionSpec))


def _first_occurrences(spec: PartitionSpec) -> PartitionSpec:
    seen, names = set(), []
    for name in spec:
        names.append(None if name in seen else name)
        if name is not None:
            seen.add(name)
    return PartitionSpec(*names)


def unbox(boxed_tree: Any) -> Any:
    """Strips logical-axis boxes without sharding constraints (placement comes from jit's out_shardings)."""
    return jax.tree.map(lambda leaf: leaf.unbox(apply_constraint=False) if isinstance(leaf, nn.LogicallyPartitioned)
                        else (leaf.unbox() if isinstance(leaf, nn.Partitioned) else leaf),
                        boxed_tree, is_leaf=lambda leaf: isinstance(leaf, nn.Partitioned))


def shardings_from_logical(logical_spec_tree: Any, mesh: jax.sharding.Mesh, rules: Rules,
                           abstract_tree: Any | None = None) -> Any:
    """Maps a tree of logical PartitionSpecs to NamedShardings on `mesh` with `rules`.

    With `abstract_tree` (same structure, leaves with `.shape`), a dimension whose size the mesh axes do not
    divide (e.g. 3 RGB input channels over fsdp=2) is replicated instead of failing.
    """
    shardings = mesh_lib.logical_to_sharding(logical_spec_tree, mesh, rules)
    if abstract_tree is None:
        return shardings
    return jax.tree.map(lambda sharding, leaf: fit_to_shape(sharding, leaf.shape), shardings, abstract_tree)


def fit_to_shape(sharding: NamedSharding, shape: Sequence[int]) -> NamedSharding:
    """Replicates the dimensions of `shape` that the sharding's mesh axes do not divide evenly."""
    spec = list(sharding.spec) + [None] * (len(shape) - len(sharding.spec))
    for dim, axes in enumerate(spec):
        if axes is None:
            continue
        ways = 1
        for axis in (axes if isinstance(axes, tuple) else (axes,)):
            ways *= sharding.mesh.shape[axis]
        if shape[dim] % ways:
            spec[dim] = None
    return NamedSharding(sharding.mesh, PartitionSpec(*spec))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    """A sharding that places a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int = 1) -> NamedSharding:
    """Splits the leading (batch) dimension over the data-parallel axes (data, fsdp); the rest replicate.

    `ndim` only spells the replicated dimensions out in the spec; the default names the leading one alone.
    """
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def batch_shardings(batch: Any, mesh: jax.sharding.Mesh) -> Any:
    """Batch shardings for a tree of arrays (or ShapeDtypeStructs) whose leading dimension is the batch."""
    return jax.tree.map(lambda leaf: batch_sharding(mesh, len(leaf.shape)), batch)
