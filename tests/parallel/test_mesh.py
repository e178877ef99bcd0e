"""Mesh construction, -1 auto-fill and the batch divisibility check."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from lumiere_jax.parallel import mesh as mesh_lib


def test_resolve_fills_one_unknown_axis():
    assert mesh_lib.resolve_mesh_shape((-1, 2, 2), 8) == (2, 2, 2)
    assert mesh_lib.resolve_mesh_shape((1, -1, 1), 8) == (1, 8, 1)


@pytest.mark.parametrize("shape, message", [
    ((-1, -1, 1), "more than one -1"),
    ((3, -1, 1), "not divisible"),
    ((2, 2, 1), "covers 4 devices"),
    ((8, 1), "one entry per axis"),
])
def test_resolve_rejects_bad_shapes(shape, message):
    with pytest.raises(ValueError, match=message):
        mesh_lib.resolve_mesh_shape(shape, 8)


def test_make_mesh_uses_all_fake_devices_with_auto_axes():
    mesh = mesh_lib.make_mesh((2, 2, -1))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "clip": 1, "tensor": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_batch_divisibility_error_names_the_fix():
    mesh = mesh_lib.make_mesh((2, 2, 2))
    mesh_lib.check_batch_divisible(8, mesh)
    with pytest.raises(ValueError, match="not divisible by the data-parallel mesh size 4"):
        mesh_lib.check_batch_divisible(6, mesh)


def test_logical_constraint_shards_batch_over_data_axes():
    mesh = mesh_lib.make_mesh((2, 2, 2))

    @jax.jit
    def constrain(x):
        return nn.with_logical_constraint(x, ("activation_batch", None))

    with mesh_lib.mesh_context(mesh):
        out = constrain(jnp.arange(16.0).reshape(8, 2))
    assert out.sharding.spec[0] == ("data", "fsdp")
    np.testing.assert_array_equal(np.asarray(out), np.arange(16.0).reshape(8, 2))


def test_make_mesh_puts_the_clip_axis_between_fsdp_and_tensor():
    mesh = mesh_lib.make_mesh((1, -1, 1), clip=4)
    assert dict(mesh.shape) == {"data": 1, "fsdp": 2, "clip": 4, "tensor": 1}
    assert mesh_lib.MeshConfig(shape=(1, 1, 1), clip=8).make_mesh().shape["clip"] == 8
    with pytest.raises(ValueError, match="clip=3 must be a positive divisor of the 8 devices"):
        mesh_lib.make_mesh((1, -1, 1), clip=3)


@pytest.mark.parametrize("shape, expected", [
    ((1, 80, 128, 128, 256), (("data", "fsdp"), "clip", None, None, "tensor")),  # frames divide: split them
    ((1, 5, 8, 8, 256), (("data", "fsdp"), None, "clip", None, "tensor")),  # 5 frames: height instead
    ((1, 5, 6, 8, 256), (("data", "fsdp"), None, None, "clip", "tensor")),  # then width
    ((1, 5, 6, 6, 3), (("data", "fsdp"), None, None, None, None)),  # nothing divides: replicated
])
def test_activation_axes_give_the_clip_axis_to_the_first_dimension_it_divides(shape, expected):
    sizes = {"data": 1, "fsdp": 1, "clip": 4, "tensor": 2}  # one clip over 4 chips (x 2 tensor)
    video = ("activation_batch", "activation_frames", "activation_height", "activation_width", "activation_channels")
    assert mesh_lib.activation_mesh_axes(video, shape, mesh_lib.LOGICAL_AXIS_RULES, sizes) == PartitionSpec(*expected)


def test_folded_batch_takes_the_clip_axis_only_where_it_divides_it():
    """[B*T, H, W, C] on fsdp=2 x clip=4: 1 clip of 8 frames per fsdp shard splits its frames (rows); of 5 frames,
    its height; 4 clips per fsdp shard go whole to the clip devices (the clip axis then acts as more fsdp)."""
    sizes = {"data": 1, "fsdp": 2, "clip": 4, "tensor": 1}
    image = ("activation_batch", "activation_height", "activation_width", "activation_channels")
    rules = mesh_lib.LOGICAL_AXIS_RULES
    assert mesh_lib.activation_mesh_axes(image, (16, 8, 8, 32), rules, sizes) == PartitionSpec(
        ("data", "fsdp", "clip"), None, None, "tensor")
    assert mesh_lib.activation_mesh_axes(image, (10, 8, 8, 32), rules, sizes) == PartitionSpec(
        ("data", "fsdp"), "clip", None, "tensor")
    video = ("activation_batch", "activation_frames", "activation_height", "activation_width", "activation_channels")
    assert mesh_lib.activation_mesh_axes(video, (8, 8, 8, 8, 32), rules, sizes) == PartitionSpec(
        ("data", "fsdp", "clip"), None, None, None, "tensor")


def test_constrain_activation_is_the_identity_outside_a_mesh():
    x = jnp.ones((2, 4, 8, 8, 3))
    assert mesh_lib.constrain_activation(x, (None,) * 5) is x
