"""UNet: shapes across configs, input checks, image mode = T2I, null text, gradient flow, sharded forward."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from jax.sharding import NamedSharding, PartitionSpec

from lumiere_jax.models import config as model_config
from lumiere_jax.models.inflate import inflate_t2i_params
from lumiere_jax.models.unet import UNet, example_inputs, frames_per_level
from lumiere_jax.parallel.mesh import logical_to_sharding, make_mesh, mesh_context


def _output_shape(config, video, in_channels=None):
    config = dataclasses.replace(config, in_channels=in_channels or config.in_channels)
    inputs = example_inputs(config, batch_size=2, video=video)
    out, _ = jax.eval_shape(lambda key: UNet(config).init_with_output(key, **inputs), jax.random.key(0))
    return inputs["x"].shape, out.shape


@pytest.mark.parametrize("config, video, in_channels", [
    (model_config.t2i_config("tiny"), False, None),
    (model_config.stunet_config("tiny"), True, None),
    (model_config.stunet_config("tiny", resampling=False), True, None),
    (model_config.conditional_config("tiny"), True, None),
    (model_config.t2i_config("tiny"), False, 7),
    (model_config.ssr_config("tiny"), True, None),
    (dataclasses.replace(model_config.t2i_config("tiny"), dtype="bfloat16", param_dtype="bfloat16"), False, None),
])
def test_output_shape_matches_input(config, video, in_channels):
    in_shape, out_shape = _output_shape(config, video, in_channels)
    assert out_shape == in_shape[:-1] + (config.out_channels,)


def test_frames_per_level_and_error():
    config = model_config.stunet_config("paper")
    assert frames_per_level(config, 80) == (80, 40, 20, 10, 5)
    assert frames_per_level(model_config.stunet_config("paper", resampling=False), 81) == (81,) * 5
    with pytest.raises(ValueError, match=r"num_frames=81 must be divisible by 2\*\*4=16 for 4 temporal downsamples"):
        frames_per_level(config, 81)
    with pytest.raises(ValueError, match="num_frames=6 must be divisible by 2\\*\\*2=4"):
        _output_shape(dataclasses.replace(model_config.stunet_config("tiny"),
                                          temporal=model_config.TemporalConfig(num_frames=6)), True)


@pytest.mark.parametrize("x_shape, message", [
    ((1, 4, 32, 32, 3), "needs a config with temporal"),
    ((1, 32, 32, 7), "in_channels=3"),
    ((1, 30, 30, 3), "must be divisible by 2\\*\\*2=4"),
])
def test_input_errors(x_shape, message):
    config = model_config.t2i_config("tiny")
    inputs = dict(example_inputs(config, 1), x=jnp.zeros(x_shape))
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(lambda: UNet(config).init(jax.random.key(0), **inputs))


def test_config_errors():
    with pytest.raises(ValueError, match="norm_groups=8 does not divide 12"):
        model_config.UNetConfig(base_channels=12)
    with pytest.raises(ValueError, match=r"attention_levels=\(3,\) names levels \[3\] outside 0..2"):
        model_config.UNetConfig(attention_levels=(3,))


def test_image_mode_is_exactly_t2i(unet_helpers):
    """A STUNet given 4-D input runs the T2I network bitwise (temporal modules unused)."""
    h = unet_helpers
    t2i_params = h.random_params(h.unbox(h.abstract_variables(h.TEST_T2I))["params"], seed=1)
    stunet_init = h.random_params(h.unbox(h.abstract_variables(h.TEST_STUNET))["params"], seed=2)
    stunet_params = inflate_t2i_params(t2i_params, stunet_init)
    inputs = h.random_inputs(h.TEST_T2I, batch_size=16, video=False)
    expected = h.forward(h.TEST_T2I, t2i_params, inputs)
    actual = h.forward(h.TEST_STUNET, stunet_params, inputs)
    assert np.all(np.isfinite(expected))
    np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))


def test_null_text_is_finite_and_ignores_padding_values(unet_helpers):
    """All-False mask (classifier-free-guidance null text): finite output that no token value can change."""
    h = unet_helpers
    params = h.random_params(h.unbox(h.abstract_variables(h.TEST_T2I))["params"], seed=3)
    inputs = h.random_inputs(h.TEST_T2I, batch_size=16, video=False)
    null = dict(inputs, text_mask=jnp.zeros_like(inputs["text_mask"]))
    zeros = h.forward(h.TEST_T2I, params, dict(null, text_embeddings=jnp.zeros_like(inputs["text_embeddings"])))
    garbage = h.forward(h.TEST_T2I, params, dict(null, text_embeddings=1e3 * inputs["text_embeddings"]))
    assert np.all(np.isfinite(zeros))
    np.testing.assert_allclose(np.asarray(garbage), np.asarray(zeros), rtol=1e-5, atol=1e-5)
    text_conditioned = h.forward(h.TEST_T2I, params, inputs)
    assert np.max(np.abs(np.asarray(text_conditioned) - np.asarray(zeros))) > 1e-3


def test_gradients_reach_every_parameter(unet_helpers):
    """SR-conditioned STUNet with all module kinds; random params, so zero-init leaves are perturbed and
    every leaf must get a gradient."""
    h = unet_helpers
    config = dataclasses.replace(h.TEST_STUNET, low_res_channels=3, low_res_size=8, dropout_rate=0.1,
                                 temporal=dataclasses.replace(h.TEST_STUNET.temporal, attention_blocks=1))
    params = h.random_params(h.unbox(h.abstract_variables(config))["params"], seed=4)
    inputs = h.random_inputs(config, batch_size=2, video=True)
    target = jax.random.normal(jax.random.key(1), inputs["x"].shape)

    def loss(params):
        out = UNet(config).apply({"params": params}, **inputs, train=True, rngs={"dropout": jax.random.key(2)})
        return jnp.mean((out - target) ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    flat = traverse_util.flatten_dict(grads)
    assert set(flat) == set(traverse_util.flatten_dict(params))
    dead = ["/".join(path) for path, grad in flat.items() if not np.any(np.asarray(grad) != 0)]
    assert not dead, f"parameters without gradient: {dead}"
    assert all(np.all(np.isfinite(np.asarray(grad))) for grad in flat.values())


def test_sharded_forward_matches_unsharded(unet_helpers):
    """Parameters sharded by their logical axis names over data=2, fsdp=2, tensor=2 (8 fake CPU devices)."""
    h = unet_helpers
    config = h.TEST_STUNET
    abstract = h.abstract_variables(config)
    params = h.random_params(h.unbox(abstract)["params"], seed=5)
    inputs = h.random_inputs(config, batch_size=4, video=True)
    expected = h.forward(config, params, inputs)

    mesh = make_mesh((2, 2, 2))
    param_shardings = logical_to_sharding(nn.get_partition_spec(abstract)["params"], mesh)
    assert any(sharding.spec != PartitionSpec() for sharding in jax.tree.leaves(param_shardings))
    batch_sharding = {name: NamedSharding(mesh, PartitionSpec(("data", "fsdp"))) for name in inputs}
    with mesh_context(mesh):
        sharded_params = jax.device_put(params, param_shardings)
        sharded_inputs = jax.device_put(inputs, batch_sharding)
        apply = jax.jit(lambda p, x: UNet(config).apply({"params": p}, **x),
                        in_shardings=(param_shardings, batch_sharding))
        actual = apply(sharded_params, sharded_inputs)
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-4, atol=1e-4)


def test_remat_traces_same_gradient_structure(unet_helpers):
    """remat=True wraps blocks without changing parameter paths; checked by tracing only (no compile)."""
    h = unet_helpers
    remat = dataclasses.replace(h.TEST_STUNET, remat=True)
    abstract = h.unbox(h.abstract_variables(remat))["params"]
    assert {"down_0_res_0", "middle_self_attention_1", "up_1_cross_attention_1"} <= set(abstract)
    inputs = example_inputs(remat, batch_size=2)
    grads = jax.eval_shape(jax.grad(lambda p: jnp.sum(UNet(remat).apply({"params": p}, **inputs))), abstract)
    assert jax.tree.map(lambda g: g.shape, grads) == jax.tree.map(lambda p: p.shape, abstract)



def test_remat_wraps_every_block_and_keeps_gradients(unet_helpers):
    """remat=True rematerialises every residual, attention, (2+1)D conv and temporal attention block (one
    `remat` call per block module) and gives the same parameter gradients as remat=False."""
    h = unet_helpers
    config = dataclasses.replace(h.TEST_STUNET, temporal=dataclasses.replace(h.TEST_STUNET.temporal, num_frames=8))
    params = h.random_params(h.unbox(h.abstract_variables(config))["params"])
    inputs = h.random_inputs(config, batch_size=2, video=True)
    remat_model = UNet(dataclasses.replace(config, remat=True))
    jaxpr = jax.make_jaxpr(lambda p: remat_model.apply({"params": p}, **inputs))(params).jaxpr
    block_kinds = ("_res_", "_self_attention_", "_cross_attention_", "_temporal_conv_", "_temporal_attention_")
    blocks = [name for name in params if any(kind in name for kind in block_kinds)]
    assert any("_temporal_conv_" in name for name in blocks) and any("_temporal_attention_" in name for name in blocks)
    assert sum(eqn.primitive.name == "remat2" for eqn in jaxpr.eqns) == len(blocks)

    def grad_fn(model):
        return jax.jit(jax.grad(lambda p: jnp.mean(model.apply({"params": p}, **inputs) ** 2)))

    plain = grad_fn(UNet(config))(params)
    remat = grad_fn(remat_model)(params)
    for expected, actual in zip(jax.tree.leaves(plain), jax.tree.leaves(remat)):
        np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-4, atol=1e-6)
