"""The one place that builds the device mesh and holds the logical axis rules.

Mesh axes (T5X / MaxText convention, plus one for splitting a clip):
  data:   pure data parallelism (parameters replicated).
  fsdp:   data parallelism with parameters and optimizer state sharded (ZeRO-3 style).
  clip:   one clip's activations split over devices (context parallelism): frames at the U-Net levels whose
          frame count the axis divides, else height (else width); parameters replicated. XLA's SPMD
          partitioner exchanges the halos of convolutions and regroups attention inputs.
  tensor: model parallelism over channels / heads / MLP width.

Modules name their parameter and activation dimensions with the logical names below;
`LOGICAL_AXIS_RULES` maps them onto mesh axes. Change the rules here or through gin (`MeshConfig`), never in
modules. Activations are constrained with `constrain_activation`, which reads the rules as flax does (in order,
a mesh axis used once per array) and also skips a rule whose mesh axes do not divide the dimension, so the
next rule for the same name, or the next name, takes the axis: that is how frames fall back to height.
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
from jax.sharding import PartitionSpec

MESH_AXES: tuple[str, ...] = ("data", "fsdp", "clip", "tensor")
SHAPE_AXES: tuple[str, ...] = ("data", "fsdp", "tensor")  # the axes of `mesh_shape`; `clip` is given on its own

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

# Logical name -> mesh axis (or axes, or None for replicated). A name may have several rules: the first whose
# mesh axes are free in the array and divide the dimension applies (`activation_mesh_axes`).
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # Activations.
    # The batch, or rows that fold it with frames (spatial layers: [B*T, H, W, C]) or pixels (temporal
    # attention: [B*H*W, T, C]): the clip axis joins the data axes where it divides them (whole clips per device,
    # so the clip axis acts as more fsdp); else it goes to the frames, height or width below.
    ("activation_batch", ("data", "fsdp", "clip")),
    ("activation_batch", ("data", "fsdp")),
    ("activation_frames", "clip"),
    ("activation_height", "clip"),  # where the frames do not divide (e.g. 5 frames at the paper's coarsest level)
    ("activation_width", "clip"),
    ("activation_queries", "clip"),  # attention queries (pixels of a frame, or of a clip for cross-attention)
    ("activation_channels", "tensor"),
    ("activation_length", None),  # text tokens
    ("activation_embed", "tensor"),
    ("activation_heads", "tensor"),
    ("activation_kv", None),
    # Parameters. The clip axis shards them too (ZeRO-style, as fsdp): a clip split over N chips would
    # otherwise hold N full copies of the parameters and Adam state.
    ("embed", ("fsdp", "clip")),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("conv_kernel", None),
    ("conv_in", ("fsdp", "clip")),
    ("conv_out", "tensor"),
    ("norm", None),
    ("vocab", "tensor"),
    ("relpos_buckets", None),
    ("frames_embed", None),
)


def resolve_mesh_shape(mesh_shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Fills at most one `-1` entry of a (data, fsdp, tensor) shape so that the product equals `num_devices`."""
    shape = list(mesh_shape)
    if len(shape) != len(SHAPE_AXES):
        raise ValueError(f"mesh_shape={tuple(mesh_shape)} needs one entry per axis {SHAPE_AXES} (the clip axis "
                         "has its own size: MeshConfig.clip)")
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


def _with_clip(shape: Sequence[int], clip: int) -> tuple[int, ...]:
    """(data, fsdp, tensor) -> (data, fsdp, clip, tensor)."""
    data, fsdp, tensor = shape
    return (data, fsdp, clip, tensor)


def make_mesh(
    mesh_shape: Sequence[int] = (-1, 1, 1),
    dcn_mesh_shape: Sequence[int] | None = None,
    devices: Sequence[jax.Device] | None = None,
    clip: int = 1,
) -> jax.sharding.Mesh:
    """Builds a mesh over (data, fsdp, clip, tensor).

    `mesh_shape` is the per-slice (ICI) shape over (data, fsdp, tensor) of the devices left after `clip`, the
    number of devices one clip is split over; `dcn_mesh_shape`, for multi-slice TPU jobs, the shape across
    slices (usually `(num_slices, 1, 1)`: data parallel over the slow network). A clip never spans slices:
    its halo exchanges run at every convolution. The clip axis sits between fsdp and tensor, as
    `create_device_mesh` gives later axes the closer devices. Axis types are Auto (GSPMD propagation), as
    T5X-style logical constraints expect.
    """
    devices = list(jax.devices() if devices is None else devices)
    num_slices = math.prod(dcn_mesh_shape) if dcn_mesh_shape is not None else 1
    per_slice = len(devices) // num_slices
    if clip < 1 or per_slice % clip:
        raise ValueError(f"clip={clip} must be a positive divisor of the {per_slice} devices per slice; choose "
                         f"the number of devices one clip is split over")
    shape = _with_clip(resolve_mesh_shape(mesh_shape, per_slice // clip), clip)
    if num_slices > 1:
        device_array = mesh_utils.create_hybrid_device_mesh(
            shape, _with_clip(dcn_mesh_shape, 1), devices=devices)
    else:
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
      shape: per-slice (ICI) mesh shape over (data, fsdp, tensor) of the devices left after `clip`; one -1
        takes the remaining devices.
      clip: devices one clip's activations are split over (frames, else height or width; see the module
        docstring). 1: every device holds whole clips. The global batch still splits over data x fsdp only.
      dcn_shape: shape across slices for multi-slice TPU jobs, e.g. (2, 1, 1); None for one slice.
      num_devices: only the first devices (debugging); None uses all.
      logical_axis_rules: (logical name, mesh axes) pairs, `LOGICAL_AXIS_RULES` by default.
    """

    shape: Sequence[int] = (-1, 1, 1)
    clip: int = 1
    dcn_shape: Sequence[int] | None = None
    num_devices: int | None = None
    logical_axis_rules: Rules = LOGICAL_AXIS_RULES

    def make_mesh(self, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
        """The mesh over `devices` (default: this job's; the planner passes a TPU topology's)."""
        devices = list(jax.devices() if devices is None else devices)
        return make_mesh(self.shape, self.dcn_shape, devices if self.num_devices is None else
                         devices[:self.num_devices], self.clip)

    @property
    def rules(self) -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
        return tuple(self.logical_axis_rules)


def activation_mesh_axes(logical_axes: Sequence[str | None], shape: Sequence[int], rules: Rules,
                         axis_sizes: dict[str, int]) -> PartitionSpec:
    """The mesh axes of an activation of `shape` named `logical_axes` (one name, or None, per dimension).

    Rules apply in order, as in flax: a rule gives its mesh axes to the dimensions of its name that have none
    yet, when those mesh axes are still free in this array, and, unlike flax, only when their total size
    divides the dimension; otherwise the next rule is tried. E.g. with `clip=4`, `[B, 5, 8, 8, C]` gets the
    clip axis on its height, `[B, 20, 8, 8, C]` on its frames.
    """
    if len(logical_axes) != len(shape):
        raise ValueError(f"logical axes {tuple(logical_axes)} do not name the {len(shape)} dimensions of {shape}")
    unassigned = object()
    assigned: list = [unassigned] * len(shape)
    used: set[str] = set()
    for name, axes in rules:
        group = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
        if used & set(group) or not set(group) <= set(axis_sizes):
            continue
        for dim, dim_name in enumerate(logical_axes):
            if dim_name == name and assigned[dim] is unassigned and not shape[dim] % math.prod(
                    axis_sizes[axis] for axis in group):
                assigned[dim] = axes
                used.update(group)
                break
    return PartitionSpec(*(None if axes is unassigned else axes for axes in assigned))


def constrain_activation(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """`with_sharding_constraint` of `x` by logical names under the active mesh and rules (`mesh_context`),
    placed by `activation_mesh_axes`; the identity outside a mesh or without rules."""
    rules = nn.get_logical_axis_rules()
    mesh = jax.sharding.get_abstract_mesh()
    if not rules or mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, activation_mesh_axes(logical_axes, x.shape, rules, dict(mesh.shape)))


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
