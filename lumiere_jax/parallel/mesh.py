"""The one place that builds the device mesh and holds the logical axis rules.

Mesh axes (T5X / MaxText convention):
  data:   pure data parallelism (parameters replicated).
  fsdp:   data parallelism with parameters and optimizer state sharded (ZeRO-3 style).
  tensor: model parallelism over channels / heads / MLP width.

Modules name their parameter and activation dimensions with the logical names below;
`LOGICAL_AXIS_RULES` maps them onto mesh axes. Change the rules here or through gin (`MeshConfig`), never in
modules.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
from jax.experimental import mesh_utils

MESH_AXES: tuple[str, ...] = ("data", "fsdp", "tensor")

# Logical name -> mesh axis (or axes, or None for replicated).
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # Activations.
    ("activation_batch", ("data", "fsdp")),
    ("activation_frames", None),
    ("activation_height", None),
    ("activation_width", None),
    ("activation_channels", "tensor"),
    ("activation_length", None),  # text tokens
    ("activation_embed", "tensor"),
    ("activation_heads", "tensor"),
    ("activation_kv", None),
    # Parameters.
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("conv_kernel", None),
    ("conv_in", "fsdp"),
    ("conv_out", "tensor"),
    ("norm", None),
    ("vocab", "tensor"),
    ("relpos_buckets", None),
    ("frames_embed", None),
)


def resolve_mesh_shape(mesh_shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Fills at most one `-1` entry so that the product equals `num_devices`."""
    shape = list(mesh_shape)
    if len(shape) != len(MESH_AXES):
        raise ValueError(f"mesh_shape={tuple(mesh_shape)} needs one entry per axis {MESH_AXES}")
    unknown = [i for i, size in enumerate(shape) if size == -1]
    if len(unknown) > 1:
        raise ValueError(f"mesh_shape={tuple(mesh_shape)} has more than one -1; give all sizes but one")
    known = math.prod(size for size in shape if size != -1)
    if unknown:
        if num_devices % known:
            raise ValueError(
                f"mesh_shape={tuple(mesh_shape)}: {num_devices} devices are not divisible by {known}; "
                "change the fixed axis sizes")
        shape[unknown[0]] = num_devices // known
    if math.prod(shape) != num_devices:
        raise ValueError(
            f"mesh_shape={tuple(shape)} covers {math.prod(shape)} devices but {num_devices} are present; "
            "use -1 on one axis to fill automatically")
    return tuple(shape)


def make_mesh(
    mesh_shape: Sequence[int] = (-1, 1, 1),
    dcn_mesh_shape: Sequence[int] | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> jax.sharding.Mesh:
    """Builds a mesh over (data, fsdp, tensor).

    `mesh_shape` is the per-slice (ICI) shape; `dcn_mesh_shape`, for multi-slice TPU jobs, the
    shape across slices (usually `(num_slices, 1, 1)`: data parallel over the slow network).
    Axis types are Auto (GSPMD propagation), as T5X-style logical constraints expect.
    """
    devices = list(jax.devices() if devices is None else devices)
    if dcn_mesh_shape is not None and math.prod(dcn_mesh_shape) > 1:
        num_slices = math.prod(dcn_mesh_shape)
        ici_shape = resolve_mesh_shape(mesh_shape, len(devices) // num_slices)
        device_array = mesh_utils.create_hybrid_device_mesh(
            ici_shape, tuple(dcn_mesh_shape), devices=devices)
    else:
        shape = resolve_mesh_shape(mesh_shape, len(devices))
        try:
            device_array = mesh_utils.create_device_mesh(shape, devices=devices)
        except (ValueError, NotImplementedError, AssertionError):
            # Fake CPU devices and odd counts have no physical topology to optimise for.
            device_array = np.asarray(devices).reshape(shape)
    axis_types = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    return jax.sharding.Mesh(device_array, MESH_AXES, axis_types=axis_types)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """The mesh a job runs on and the rules that place logical axes on it (gin_configs/mesh/ binds it).

    Attributes:
      shape: per-slice (ICI) mesh shape over (data, fsdp, tensor); one -1 takes the remaining devices.
      dcn_shape: shape across slices for multi-slice TPU jobs, e.g. (2, 1, 1); None for one slice.
      num_devices: only the first devices (debugging); None uses all.
      logical_axis_rules: (logical name, mesh axes) pairs, `LOGICAL_AXIS_RULES` by default.
    """

    shape: Sequence[int] = (-1, 1, 1)
    dcn_shape: Sequence[int] | None = None
    num_devices: int | None = None
    logical_axis_rules: Sequence[tuple[str, str | tuple[str, ...] | None]] = LOGICAL_AXIS_RULES

    def make_mesh(self, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
        """The mesh over `devices` (default: this job's; the planner passes a TPU topology's)."""
        devices = list(jax.devices() if devices is None else devices)
        return make_mesh(self.shape, self.dcn_shape, devices if self.num_devices is None else
                         devices[:self.num_devices])

    @property
    def rules(self) -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
        return tuple(self.logical_axis_rules)


@contextlib.contextmanager
def mesh_context(
    mesh: jax.sharding.Mesh,
    rules: Sequence[tuple[str, str | tuple[str, ...] | None]] = LOGICAL_AXIS_RULES,
) -> Iterator[jax.sharding.Mesh]:
    """Enters the mesh and logical axis rules together (activation constraints need both)."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(tuple(rules)):
        yield mesh


def logical_to_sharding(
    logical_tree, mesh: jax.sharding.Mesh,
    rules: Sequence[tuple[str, str | tuple[str, ...] | None]] = LOGICAL_AXIS_RULES,
):
    """Maps a tree of logical PartitionSpecs (from `nn.get_partition_spec`) to NamedShardings."""
    return nn.logical_to_mesh_sharding(logical_tree, mesh, tuple(rules))


def data_axis_size(mesh: jax.sharding.Mesh) -> int:
    """Number of ways the batch is split: the product of the data-parallel mesh axes."""
    return mesh.shape["data"] * mesh.shape["fsdp"]


def check_batch_divisible(global_batch_size: int, mesh: jax.sharding.Mesh) -> None:
    """Raises a clear error when the global batch cannot be split evenly over the data axes."""
    ways = data_axis_size(mesh)
    if global_batch_size % ways:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by the data-parallel mesh size "
            f"{ways} (data={mesh.shape['data']} x fsdp={mesh.shape['fsdp']}); choose a batch size that is "
            f"a multiple of {ways} or change the mesh shape")
