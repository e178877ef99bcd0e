"""Style interpolation (paper 4.1): spatial weights blended, temporal weights untouched."""

import dataclasses

import numpy as np
import pytest

from lumiere_jax.sample import style
from tiny_setup import base_config, make_adapter, random_params


def trees(seed):
    rng = np.random.default_rng(seed)
    model = {"down_0_res_0": {"conv_0": {"kernel": rng.normal(size=(3, 3, 4, 8)).astype(np.float32)}},
             "down_0_temporal_conv_0": {"temporal_conv": {"kernel": rng.normal(size=(3, 8, 8)).astype(np.float32)}},
             "output_conv": {"bias": rng.normal(size=(3,)).astype(np.float32)}}
    style_t2i = {"down_0_res_0": {"conv_0": {"kernel": rng.normal(size=(3, 3, 4, 8)).astype(np.float32)}},
                 "output_conv": {"bias": rng.normal(size=(3,)).astype(np.float32)}}
    return model, style_t2i


def at(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def test_alpha_zero_and_one_are_exact():
    model, style_t2i = trees(0)
    original = style.interpolate_spatial(model, style_t2i, 0.0)
    styled = style.interpolate_spatial(model, style_t2i, 1.0)
    for path in (("down_0_res_0", "conv_0", "kernel"), ("output_conv", "bias")):
        np.testing.assert_array_equal(np.asarray(at(original, path)), at(model, path))
        np.testing.assert_array_equal(np.asarray(at(styled, path)), at(style_t2i, path))
    for tree in (original, styled):
        temporal = tree["down_0_temporal_conv_0"]["temporal_conv"]["kernel"]
        np.testing.assert_array_equal(np.asarray(temporal), model["down_0_temporal_conv_0"]["temporal_conv"]["kernel"])


def test_intermediate_alpha_is_the_convex_combination():
    model, style_t2i = trees(1)
    blended = style.interpolate_spatial(model, style_t2i, 0.7)
    expected = 0.7 * style_t2i["output_conv"]["bias"] + 0.3 * model["output_conv"]["bias"]
    np.testing.assert_allclose(np.asarray(blended["output_conv"]["bias"]), expected, rtol=1e-6)


def test_mismatched_style_checkpoint_and_alpha_are_errors():
    model, style_t2i = trees(2)
    del style_t2i["output_conv"]
    with pytest.raises(ValueError, match="missing"):
        style.interpolate_spatial(model, style_t2i, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        style.interpolate_spatial(*trees(2), 1.5)


def test_conditional_model_blends_the_video_channels_and_keeps_condition_and_mask():
    """The 7-channel <J, C, M> input convolution: J's 3 channels interpolate, C and M keep the model's weights."""
    rng = np.random.default_rng(3)
    model, style_t2i = trees(3)
    model["input_conv"] = {"kernel": rng.normal(size=(3, 3, 7, 8)).astype(np.float32)}
    style_t2i["input_conv"] = {"kernel": rng.normal(size=(3, 3, 3, 8)).astype(np.float32)}
    blended = np.asarray(style.interpolate_spatial(model, style_t2i, 0.6)["input_conv"]["kernel"])
    expected = model["input_conv"]["kernel"].copy()
    expected[:, :, :3] = 0.6 * style_t2i["input_conv"]["kernel"] + 0.4 * expected[:, :, :3]
    np.testing.assert_allclose(blended, expected, rtol=1e-6, atol=1e-7)
    # Only the input convolution may be wider; any other shape difference is still an error.
    model["output_conv"]["bias"] = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="output_conv/bias"):
        style.interpolate_spatial(model, style_t2i, 0.6)


def test_real_conditional_model_takes_a_t2i_style_checkpoint():
    conditional = random_params(make_adapter("conditional", base_config(7)), 0)
    t2i = random_params(make_adapter("t2i", dataclasses.replace(base_config(3), temporal=None)), 1)
    blended = style.interpolate_spatial(conditional, t2i, 1.0)
    np.testing.assert_allclose(np.asarray(blended["input_conv"]["kernel"])[:, :, :3], t2i["input_conv"]["kernel"])
    np.testing.assert_array_equal(np.asarray(blended["input_conv"]["kernel"])[:, :, 3:],
                                  conditional["input_conv"]["kernel"][:, :, 3:])
