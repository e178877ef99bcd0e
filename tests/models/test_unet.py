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
from lumiere_jax.models.remat import REMAT_POLICIES
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


def _saved_residual_bytes(model, params, inputs) -> int:
    """Bytes the backward pass keeps from the forward pass: the residuals of `jax.vjp` (traced, not compiled)."""
    residuals = jax.eval_shape(lambda p: jax.vjp(lambda q: jnp.sum(model.apply({"params": q}, **inputs)), p)[1],
                               params)
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(residuals))


def test_remat_policies_keep_paths_and_order_what_the_backward_keeps(unet_helpers):
    """Every policy keeps the parameter paths; the forward-to-backward residuals shrink from none to save_dots to
    save_block_outputs to full, and offload_block_outputs moves save_block_outputs' residuals to pinned host memory.
    Traced only: XLA:CPU's compiled memory analysis does not reflect rematerialisation (BENCHMARKS.md), and on
    CPU the host copies lower to nothing, so the offload is checked in the traced program."""
    h = unet_helpers
    abstract = h.unbox(h.abstract_variables(h.TEST_STUNET))["params"]
    inputs = example_inputs(h.TEST_STUNET, batch_size=1)
    models = {policy: UNet(dataclasses.replace(h.TEST_STUNET, remat=policy)) for policy in REMAT_POLICIES}
    saved = {}
    for policy, model in models.items():
        assert jax.tree.structure(h.unbox(h.abstract_variables(model.config))["params"]) == jax.tree.structure(abstract)
        saved[policy] = _saved_residual_bytes(model, abstract, inputs)
    assert saved["full"] < saved["save_block_outputs"] < saved["save_dots"] < saved["none"], saved
    assert saved["offload_block_outputs"] == saved["save_block_outputs"]
    for policy in ("save_block_outputs", "offload_block_outputs"):
        jaxpr = jax.make_jaxpr(jax.grad(lambda p, model=models[policy]: jnp.sum(model.apply({"params": p}, **inputs))))
        assert ("MemorySpace.Host" in str(jaxpr(abstract))) == (policy == "offload_block_outputs")
    with pytest.raises(ValueError, match="not a remat policy"):
        dataclasses.replace(h.TEST_STUNET, remat="dots")


def test_remat_policies_give_the_loss_and_gradients_of_no_remat(unet_helpers):
    """All five policies in one compiled program (one compile): loss and parameter gradients equal remat="none"."""
    h = unet_helpers
    params = h.random_params(h.unbox(h.abstract_variables(h.TEST_STUNET))["params"])
    inputs = h.random_inputs(h.TEST_STUNET, batch_size=1, video=True)

    def loss_fn(policy):
        model = UNet(dataclasses.replace(h.TEST_STUNET, remat=policy))
        return lambda p: jnp.mean(model.apply({"params": p}, **inputs) ** 2)

    def every_policy(params):
        return {policy: jax.value_and_grad(loss_fn(policy))(params) for policy in REMAT_POLICIES}

    results = jax.jit(every_policy)(params)
    expected_loss, expected_grads = results["none"]
    scale = max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(expected_grads))
    for policy, (loss, grads) in results.items():
        np.testing.assert_allclose(float(loss), float(expected_loss), rtol=1e-6, err_msg=policy)
        for actual, expected in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
            np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-5, atol=1e-6 * scale,
                                       err_msg=policy)
