"""Temporal modules: nearest-neighbour resampling and identity at init, reshapes, conv against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumiere_jax.models.temporal import (SpaceTimeConvBlock, TemporalAttentionBlock, TemporalDownsample,
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
