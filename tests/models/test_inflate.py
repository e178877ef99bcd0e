"""Inflation T2I -> STUNet, the frozen-T2I training mask, and the 3 -> 7 channel expansion."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from lumiere_jax.models.inflate import (
    expand_input_channels, inflate_leaf, inflate_t2i_params, is_temporal, trainable_mask)
from lumiere_jax.models.unet import UNet, example_inputs


def _random_tree(h, config, seed):
    return h.random_params(h.unbox(h.abstract_variables(config))["params"], seed=seed)


def test_static_video_at_init_equals_t2i_per_frame(unet_helpers):
    """Paper section 2 init: NN temporal resampling + identity temporal blocks, so a clip whose frames are all
    equal goes through the inflated STUNet exactly as each frame through the T2I network."""
    h = unet_helpers
    config = h.TEST_STUNET
    t2i_params = _random_tree(h, h.TEST_T2I, seed=6)
    init = jax.jit(lambda key: UNet(config).init(key, **example_inputs(config)))(h.cheap_key())
    inflated = inflate_t2i_params(t2i_params, init["params"])
    assert nn.get_partition_spec(inflated)["input_conv"]["kernel"] == jax.sharding.PartitionSpec(
        "conv_kernel", None, None, "conv_out")  # Logical-axis boxes survive inflation.
    params = nn.unbox(inflated)

    inputs = h.random_inputs(config, batch_size=4, video=True)
    frames = config.temporal.num_frames
    static = jnp.repeat(inputs["x"][:, :1], frames, axis=1)
    video_out = np.asarray(h.forward(config, params, dict(inputs, x=static)))
    per_frame_inputs = {name: jnp.repeat(value, frames, axis=0) for name, value in inputs.items() if name != "x"}
    per_frame_inputs["x"] = static.reshape((-1,) + static.shape[2:])
    image_out = np.asarray(h.forward(h.TEST_T2I, t2i_params, per_frame_inputs)).reshape(video_out.shape)
    np.testing.assert_allclose(video_out, image_out, rtol=1e-4, atol=1e-4)

    # A moving clip is not per-frame: temporal down-sampling drops odd frames at the coarse levels.
    moving_out = np.asarray(h.forward(config, params, inputs))
    moving_image_out = np.asarray(h.forward(h.TEST_T2I, t2i_params, dict(
        per_frame_inputs, x=inputs["x"].reshape(per_frame_inputs["x"].shape)))).reshape(moving_out.shape)
    assert np.abs(moving_out - moving_image_out).max() > 1e-2


def test_inflate_errors_list_paths(unet_helpers):
    h = unet_helpers
    stunet = h.unbox(h.abstract_variables(h.TEST_STUNET))["params"]
    t2i = dict(h.unbox(h.abstract_variables(h.TEST_T2I))["params"])
    t2i["extra_block"] = {"kernel": jax.ShapeDtypeStruct((2,), jnp.float32)}
    del t2i["output_norm"]
    t2i["input_conv"] = dict(t2i["input_conv"], kernel=jax.ShapeDtypeStruct((3, 3, 3, 8), jnp.float32))
    with pytest.raises(ValueError) as error:
        inflate_t2i_params(t2i, stunet)
    message = str(error.value)
    assert "T2I paths missing from the STUNet tree: ['extra_block/kernel']" in message
    assert "output_norm/bias" in message and "output_norm/scale" in message
    assert "input_conv/kernel: (3, 3, 3, 8) vs (3, 3, 3, 16)" in message


def test_frozen_t2i_optimizer_step_changes_only_temporal_params(unet_helpers):
    h = unet_helpers
    params = _random_tree(h, h.TEST_STUNET, seed=7)
    mask = trainable_mask(params)
    flat_mask = traverse_util.flatten_dict(mask)
    assert any(flat_mask.values()) and not all(flat_mask.values())
    assert flat_mask[("down_0_temporal_downsample", "conv", "kernel")]
    assert flat_mask[("middle_temporal_attention_0_1", "attention", "output", "kernel")]
    assert not flat_mask[("down_0_res_0", "conv_0", "kernel")]
    assert not flat_mask[("conditioning", "text_pool", "kernel")]
    t2i_paths = set(traverse_util.flatten_dict(h.unbox(h.abstract_variables(h.TEST_T2I))["params"]))
    assert {path for path, trained in flat_mask.items() if not trained} == t2i_paths

    labels = jax.tree.map(lambda trained: "train" if trained else "freeze", mask)
    optimizer = optax.multi_transform({"train": optax.adam(1e-2), "freeze": optax.set_to_zero()}, labels)
    grads = _random_tree(h, h.TEST_STUNET, seed=8)

    @jax.jit
    def step(params, grads):
        updates, _ = optimizer.update(grads, optimizer.init(params), params)
        return optax.apply_updates(params, updates)

    new_params = step(params, grads)
    for path, old in traverse_util.flatten_dict(params).items():
        new = np.asarray(traverse_util.flatten_dict(new_params)[path])
        if is_temporal(path):
            assert np.all(new != np.asarray(old)), "/".join(path)
        else:
            np.testing.assert_array_equal(new, np.asarray(old), err_msg="/".join(path))


def test_seven_channel_model_at_init_equals_three_channel_model(unet_helpers):
    """Paper 4.2: <J, C, M> input with zero new input weights ignores C and M, for any C, M."""
    h = unet_helpers
    config = h.TEST_STUNET
    conditional = dataclasses.replace(config, in_channels=7)
    params = _random_tree(h, config, seed=9)
    widened = expand_input_channels(params)
    assert widened["input_conv"]["kernel"].shape == (3, 3, 7, 16)
    assert not np.any(np.asarray(widened["input_conv"]["kernel"][:, :, 3:]))

    inputs = h.random_inputs(config, batch_size=4, video=True)
    rng = np.random.default_rng(10)
    condition = jnp.asarray(rng.standard_normal(inputs["x"].shape), jnp.float32)
    known = jnp.asarray(rng.random(inputs["x"].shape[:-1] + (1,)) < 0.5, jnp.float32)
    expected = np.asarray(h.forward(config, params, inputs))
    seven = dict(inputs, x=jnp.concatenate([inputs["x"], condition, known], axis=-1))
    np.testing.assert_allclose(np.asarray(h.forward(conditional, widened, seven)), expected, rtol=1e-5, atol=1e-5)

    trained = dict(widened, input_conv=dict(widened["input_conv"],
                                            kernel=widened["input_conv"]["kernel"].at[:, :, 3:].set(0.1)))
    assert np.abs(np.asarray(h.forward(conditional, trained, seven)) - expected).max() > 1e-3


def test_expand_keeps_low_res_channels_last():
    kernel = jnp.arange(3 * 3 * 6 * 2, dtype=jnp.float32).reshape(3, 3, 6, 2)  # 3 x + 3 low-res channels
    widened = expand_input_channels({"input_conv": {"kernel": kernel}})["input_conv"]["kernel"]
    np.testing.assert_array_equal(widened[:, :, :3], kernel[:, :, :3])
    np.testing.assert_array_equal(widened[:, :, 3:7], 0)
    np.testing.assert_array_equal(widened[:, :, 7:], kernel[:, :, 3:])


def test_static_clip_through_inflated_ssr_equals_image_sr_per_frame(unet_helpers):
    """The SSR inflated from the image SR (runs/pretrain_sr.gin -> runs/train_ssr.gin) starts as the image SR
    applied per frame: same paths, identity temporal blocks; low-res conditioning and augmentation included."""
    from lumiere_jax.models import config as config_lib  # noqa: PLC0415

    h = unet_helpers
    ssr, image_sr = config_lib.ssr_config("tiny"), config_lib.ssr_image_config("tiny")
    sr_params = _random_tree(h, image_sr, seed=8)
    init = jax.jit(lambda key: UNet(ssr).init(key, **example_inputs(ssr)))(h.cheap_key())
    params = nn.unbox(inflate_t2i_params(sr_params, init["params"]))
    inputs = h.random_inputs(ssr, batch_size=2, video=True)
    frames = ssr.temporal.num_frames
    static = {**inputs, "x": jnp.repeat(inputs["x"][:, :1], frames, axis=1),
              "low_res": jnp.repeat(inputs["low_res"][:, :1], frames, axis=1)}
    video_out = np.asarray(h.forward(ssr, params, static))
    per_frame = {name: jnp.repeat(value, frames, axis=0) for name, value in inputs.items()
                 if name not in ("x", "low_res")}
    per_frame.update(x=static["x"].reshape((-1,) + static["x"].shape[2:]),
                     low_res=static["low_res"].reshape((-1,) + static["low_res"].shape[2:]))
    image_out = np.asarray(h.forward(image_sr, sr_params, per_frame)).reshape(video_out.shape)
    np.testing.assert_allclose(video_out, image_out, rtol=1e-4, atol=1e-4)
    assert np.abs(image_out).mean() > 1e-2  # a real output, not zeros


def test_t2i_inflates_into_a_conditional_stunet_through_the_one_leaf_rule(unet_helpers):
    """T2I -> 7-channel STUNet in one call: the input conv widens as in `expand_input_channels` (new channels
    zero, after x), every other T2I parameter is copied; other kernels of another shape are refused by name."""
    h = unet_helpers
    conditional = dataclasses.replace(h.TEST_STUNET, in_channels=7)
    t2i_params = _random_tree(h, h.TEST_T2I, seed=11)
    init = h.unbox(jax.jit(lambda key: UNet(conditional).init(key, **example_inputs(conditional)))(h.cheap_key()))
    inflated = inflate_t2i_params(t2i_params, init["params"])
    kernel = np.asarray(inflated["input_conv"]["kernel"])
    np.testing.assert_array_equal(kernel[:, :, :3], np.asarray(t2i_params["input_conv"]["kernel"]))
    np.testing.assert_array_equal(kernel[:, :, 3:], 0.0)
    np.testing.assert_array_equal(kernel, np.asarray(expand_input_channels(t2i_params)["input_conv"]["kernel"]))

    with pytest.raises(ValueError, match=r"output_conv/kernel: source shape \(3, 3, 16, 3\) cannot become"):
        inflate_leaf("output_conv/kernel", jnp.zeros((3, 3, 16, 3)), (3, 3, 17, 3))


def test_temporal_text_cross_attention_starts_as_identity_and_trains(unet_helpers):
    """`TemporalConfig.text_cross_attention`: one trained cross-attention per temporal block at each
    cross-attention level; with its zero-initialised output it is the STUNet without it."""
    h = unet_helpers
    plain = h.TEST_STUNET
    config = dataclasses.replace(plain, temporal=dataclasses.replace(plain.temporal, text_cross_attention=True))
    params = _random_tree(h, config, seed=11)
    added = sorted(name for name in params if "temporal_cross_attention" in name)
    assert added == ["down_0_temporal_cross_attention_0", "down_1_temporal_cross_attention_0",
                     "middle_temporal_cross_attention_0", "middle_temporal_cross_attention_1",
                     "up_0_temporal_cross_attention_0", "up_0_temporal_cross_attention_1",
                     "up_1_temporal_cross_attention_0", "up_1_temporal_cross_attention_1"]
    flat_mask = traverse_util.flatten_dict(trainable_mask(params))
    assert all(flat_mask[path] for path in flat_mask if "temporal_cross_attention" in path[0])

    def with_output(value):
        return {name: (dict(tree, attention=dict(tree["attention"], output=jax.tree.map(
            lambda leaf: jnp.full_like(leaf, value), tree["attention"]["output"])))
            if name in added else tree) for name, tree in params.items()}

    inputs = h.random_inputs(plain, batch_size=2, video=True)
    without = np.asarray(h.forward(plain, {name: tree for name, tree in params.items() if name not in added}, inputs))
    np.testing.assert_allclose(np.asarray(h.forward(config, with_output(0.0), inputs)), without, rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(h.forward(config, with_output(0.05), inputs)) - without).max() > 1e-3
