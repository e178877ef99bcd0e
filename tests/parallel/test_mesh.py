"""Mesh construction, -1 auto-fill and the batch divisibility check."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
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
