"""Temporal modules: nearest-neighbour resampling and identity at init, reshapes, conv against NumPy."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumiere_jax.models.layers import conv_layer
from lumiere_jax.models.temporal import (FrameConv, SpaceTimeConvBlock, TemporalAttentionBlock, TemporalDownsample,
                                         TemporalUpsample, batch_to_pixels, pixels_to_batch)

VIDEO = np.random.default_rng(0).standard_normal((2, 6, 4, 3, 8)).astype(np.float32)  # [B, T, H, W, C]


@pytest.fixture
def init_and_apply(unet_helpers):
    """Real Flax init (cheap test PRNG) and apply, jitted together: `module -> output at init`."""
    return lambda module: np.asarray(jax.jit(module.init_with_output)(unet_helpers.cheap_key(), VIDEO)[0])


def test_downsample_at_init_is_every_other_frame(init_and_apply):
    out = init_and_apply(TemporalDownsample())
    np.testing.assert_array_equal(out, VIDEO[:, ::2])


def test_upsample_at_init_repeats_frames(init_and_apply):
    out = init_and_apply(TemporalUpsample())
    np.testing.assert_array_equal(out, np.repeat(VIDEO, 2, axis=1))


@pytest.mark.parametrize("module", [SpaceTimeConvBlock(norm_groups=4), TemporalAttentionBlock(num_heads=2)])
def test_residual_blocks_are_identity_at_init(module, init_and_apply):
    out = init_and_apply(module)
    np.testing.assert_array_equal(out, VIDEO)


def test_downsample_matches_numpy_conv_for_random_kernel(unet_helpers):
    """Strided temporal conv vs a direct NumPy sum: out[t] = b + sum_k x[2t + k - 1] @ W[k], zero padded."""
    module = TemporalDownsample()
    variables = jax.jit(module.init)(unet_helpers.cheap_key(), VIDEO)
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((3, 8, 8)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    params = jax.tree.map(lambda x: x, variables["params"])
    params["conv"]["kernel"] = params["conv"]["kernel"].replace_boxed(jnp.asarray(kernel))
    params["conv"]["bias"] = params["conv"]["bias"].replace_boxed(jnp.asarray(bias))
    out = np.asarray(jax.jit(module.apply)({"params": params}, VIDEO))
    padded = np.pad(VIDEO, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)))
    expected = np.stack([bias + sum(padded[:, 2 * t + k] @ kernel[k] for k in range(3)) for t in range(3)], axis=1)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_temporal_attention_mixes_frames_once_perturbed(unet_helpers):
    """After perturbing the zero output projection, changing one frame changes the others' outputs."""
    module = TemporalAttentionBlock(num_heads=2)
    variables = jax.jit(module.init)(unet_helpers.cheap_key(), VIDEO)
    output = variables["params"]["attention"]["output"]["kernel"]
    params = dict(variables["params"])
    params["attention"] = dict(params["attention"])
    params["attention"]["output"] = dict(params["attention"]["output"],
                                         kernel=output.replace_boxed(0.1 * jnp.ones_like(output.unbox())))
    changed = VIDEO.copy()
    changed[:, 0] = np.random.default_rng(2).standard_normal(changed[:, 0].shape)
    apply = jax.jit(module.apply)
    before = np.asarray(apply({"params": params}, VIDEO))
    after = np.asarray(apply({"params": params}, changed))
    assert np.abs(after[:, 1:] - before[:, 1:]).max() > 1e-4


def test_pixel_fold_round_trip():
    sequences = pixels_to_batch(VIDEO)
    assert sequences.shape == (2 * 4 * 3, 6, 8)
    np.testing.assert_array_equal(np.asarray(sequences[4]), VIDEO[0, :, 1, 1])  # pixel (h=1, w=1) of clip 0
    np.testing.assert_array_equal(np.asarray(batch_to_pixels(sequences, 2, 4, 3)), VIDEO)



@pytest.mark.parametrize("taps, strides, padding", [(3, 1, None), (5, 1, None), (4, 1, None), (3, 2, (1, 1))])
def test_frame_conv_matches_lax_conv_over_pixel_sequences(taps, strides, padding, unet_helpers):
    """FrameConv (one matmul over stacked taps) vs `lax.conv_general_dilated` over pixels folded into the batch:
    the parameter tree of `conv_layer(C, (K,))`, and equal outputs and gradients (input, kernel, bias)."""
    module = FrameConv(taps, strides=strides, padding=padding)
    conv_padding = (padding,) if padding else "SAME"
    reference_conv = conv_layer(8, (taps,), strides=strides, padding=conv_padding, name="conv", dtype=jnp.float32,
                                param_dtype=jnp.float32)
    key = unet_helpers.cheap_key()
    ours_params = jax.jit(module.init)(key, VIDEO)["params"]
    reference_params = jax.jit(reference_conv.init)(key, pixels_to_batch(VIDEO))["params"]
    assert nn.get_partition_spec(ours_params) == nn.get_partition_spec(reference_params)
    assert jax.tree.map(jnp.shape, nn.unbox(ours_params)) == jax.tree.map(jnp.shape, nn.unbox(reference_params))

    def reference(params, video):  # [B, T, H, W, C] -> [B*H*W, T, C] -> 1-D conv over T -> back
        batch, _, height, width, _ = video.shape
        sequences = jax.lax.conv_general_dilated(pixels_to_batch(video), params["kernel"], (strides,), conv_padding,
                                                 dimension_numbers=("NWC", "WIO", "NWC")) + params["bias"]
        return batch_to_pixels(sequences, batch, height, width)

    rng = np.random.default_rng(3)
    params = {"kernel": jnp.asarray(rng.standard_normal((taps, 8, 8)), jnp.float32),
              "bias": jnp.asarray(rng.standard_normal(8), jnp.float32)}
    out_frames = (VIDEO.shape[1] - 1) // strides + 1
    cotangent = jnp.asarray(rng.standard_normal((2, out_frames) + VIDEO.shape[2:]), jnp.float32)
    results = []
    for function in (lambda params, video: module.apply({"params": params}, video), reference):
        out, vjp = jax.vjp(jax.jit(function), params, jnp.asarray(VIDEO))
        results.append((out, vjp(cotangent)))
    (ours, ours_grads), (expected, expected_grads) = results
    assert ours.shape == cotangent.shape
    np.testing.assert_allclose(np.asarray(ours), np.asarray(expected), rtol=1e-5, atol=1e-5)
    for mine, theirs in zip(jax.tree.leaves(ours_grads), jax.tree.leaves(expected_grads), strict=True):
        np.testing.assert_allclose(np.asarray(mine), np.asarray(theirs), rtol=1e-5, atol=1e-4)
