"""Style interpolation (paper 4.1): spatial weights blended, temporal weights untouched."""

import numpy as np
import pytest

from lumiere_jax.sample import style


def trees(seed):
    rng = np.random.default_rng(seed)
    model = {"down_0_res_0": {"conv_0": {"kernel": rng.normal(size=(3, 3, 4, 8)).astype(np.float32)}},
             "down_0_temporal_conv_0": {"temporal_conv": {"kernel": rng.normal(size=(3, 8, 8)).astype(np.float32)}},
             "output_conv": {"bias": rng.normal(size=(3,)).astype(np.float32)}}
    style_t2i = {"down_0_res_0": {"conv_0": {"kernel": rng.normal(size=(3, 3, 4, 8)).astype(np.float32)}},
                 "output_conv": {"bias": rng.normal(size=(3,)).astype(np.float32)}}
    return model, style_t2i


def test_alpha_zero_and_one_are_exact():
    model, style_t2i = trees(0)
    original = style.interpolate_spatial(model, style_t2i, 0.0)
    styled = style.interpolate_spatial(model, style_t2i, 1.0)
    for path in (("down_0_res_0", "conv_0", "kernel"), ("output_conv", "bias")):
        get = lambda tree: tree[path[0]][path[1]] if len(path) == 2 else tree[path[0]][path[1]][path[2]]  # noqa: E731
        np.testing.assert_array_equal(np.asarray(get(original)), get(model))
        np.testing.assert_array_equal(np.asarray(get(styled)), get(style_t2i))
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
