"""Layer reformulations against the flax / lax layers they replace: parameter trees, outputs and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumiere_jax.models.layers import GroupNorm


@pytest.mark.parametrize("shape, groups", [((2, 6, 5, 8), 4), ((2, 3, 4, 5, 12), 3), ((3, 8), 2)])
def test_group_norm_matches_flax_group_norm(shape, groups):
    """Same parameter tree as `nn.GroupNorm`; outputs and gradients (input, scale, bias) equal in float32 on
    inputs with a per-channel offset (so groups differ and E[x^2] - E[x]^2 is exercised)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape) * 2.0 + rng.standard_normal(shape[-1]) * 3.0, jnp.float32)
    ours = GroupNorm(groups)
    theirs = nn.GroupNorm(num_groups=groups)
    ours_params = ours.init(jax.random.key(0), x)["params"]
    assert jax.tree.map(jnp.shape, nn.unbox(ours_params)) == jax.tree.map(jnp.shape, theirs.init(jax.random.key(0),
                                                                                                  x)["params"])
    assert nn.get_partition_spec(ours_params) == {"scale": jax.sharding.PartitionSpec("norm"),
                                                  "bias": jax.sharding.PartitionSpec("norm")}
    params = {"scale": jnp.asarray(rng.standard_normal(shape[-1]), jnp.float32),
              "bias": jnp.asarray(rng.standard_normal(shape[-1]), jnp.float32)}
    cotangent = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    results = []
    for module in (ours, theirs):
        def output_and_grads(params, x, module=module):
            out, vjp = jax.vjp(lambda params, x: module.apply({"params": params}, x), params, x)
            return out, vjp(cotangent)
        results.append(jax.jit(output_and_grads)(params, x))
    (out, grads), (expected, expected_grads) = results
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=1e-5, atol=1e-5)
    for mine, reference in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads), strict=True):
        np.testing.assert_allclose(np.asarray(mine), np.asarray(reference), rtol=1e-4, atol=1e-4)


def test_group_norm_normalises_each_group_and_keeps_dtype():
    """Independent of flax: with unit scale and zero bias every (example, group) has mean 0 and variance 1, and
    the output takes the module's dtype."""
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 4, 4, 6)) * 5.0 + 7.0, jnp.bfloat16)
    module = GroupNorm(3, dtype=jnp.bfloat16)
    out = jax.jit(module.init_with_output)(jax.random.key(0), x)[0]
    assert out.dtype == jnp.bfloat16
    groups = np.asarray(out, np.float32).reshape(2, 16, 3, 2)
    np.testing.assert_allclose(groups.mean((1, 3)), 0.0, atol=2e-2)
    np.testing.assert_allclose(groups.var((1, 3)), 1.0, atol=2e-2)
    with pytest.raises(ValueError, match="do not divide"):
        GroupNorm(4).init(jax.random.key(0), x)
