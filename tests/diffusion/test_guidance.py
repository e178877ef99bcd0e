"""Classifier-free guidance and dynamic thresholding against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumiere_jax.diffusion import guidance
from lumiere_jax.diffusion import parameterization as param_lib

RNG = np.random.default_rng(0)


def _numpy_dynamic_threshold(x0, percentile):
    out = np.empty_like(x0)
    for index, example in enumerate(x0):
        scale = max(np.percentile(np.abs(example), percentile), 1.0)
        out[index] = np.clip(example, -scale, scale) / scale
    return out


def test_guidance_weight_endpoints_and_extrapolation():
    conditional, unconditional = RNG.normal(size=(2, 3, 4)), RNG.normal(size=(2, 3, 4))
    np.testing.assert_allclose(guidance.classifier_free_guidance(conditional, unconditional, 1.0), conditional)
    np.testing.assert_allclose(guidance.classifier_free_guidance(conditional, unconditional, 0.0), unconditional)
    np.testing.assert_allclose(
        guidance.classifier_free_guidance(conditional, unconditional, 7.5),
        unconditional + 7.5 * (conditional - unconditional), rtol=1e-12)


@pytest.mark.parametrize("percentile", [99.5, 90.0, 50.0])
def test_dynamic_threshold_matches_numpy(percentile):
    x0 = (RNG.normal(size=(3, 4, 6, 6, 3)) * np.array([0.3, 1.5, 4.0])[:, None, None, None, None])
    x0 = x0.astype(np.float32)
    out = np.asarray(guidance.dynamic_threshold(jnp.asarray(x0), percentile))
    np.testing.assert_allclose(out, _numpy_dynamic_threshold(x0, percentile), rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(out) <= 1.0 + 1e-6)


def test_dynamic_threshold_leaves_in_range_data_unchanged():
    x0 = RNG.uniform(-0.9, 0.9, size=(2, 5, 5, 3)).astype(np.float32)  # images: s = 1
    np.testing.assert_array_equal(guidance.dynamic_threshold(jnp.asarray(x0), 99.5), x0)


def _toy_model(z, logsnr, cond):
    """A raw 'v' model whose output depends on z, logsnr and a per-example condition scale."""
    return cond["scale"][:, None, None] * jnp.tanh(z) + 0.1 * logsnr[:, None, None]


def _cond_and_null(batch_size):
    return {"scale": jnp.asarray(RNG.normal(size=batch_size), jnp.float32)}, {"scale": jnp.zeros(batch_size)}


@pytest.mark.parametrize("parameterization", param_lib.PARAMETERIZATIONS)
def test_guided_denoiser_weights_one_and_zero(parameterization):
    cond, null = _cond_and_null(3)
    z = jnp.asarray(RNG.normal(size=(3, 4, 2)), jnp.float32)
    logsnr = jnp.array([-2.0, 0.5, 3.0])
    x0_cond = param_lib.to_x0(_toy_model(z, logsnr, cond), z, logsnr, parameterization)
    x0_null = param_lib.to_x0(_toy_model(z, logsnr, null), z, logsnr, parameterization)
    for weight, expected in [(1.0, x0_cond), (jnp.float32(1.0), x0_cond), (0.0, x0_null)]:
        denoise = guidance.guided_denoiser(_toy_model, cond, null, weight, parameterization, None)
        np.testing.assert_allclose(denoise(z, logsnr), expected, rtol=1e-5, atol=1e-5)


def test_guided_denoiser_runs_one_batch_of_two_b_and_thresholds():
    cond, null = _cond_and_null(3)
    batch_sizes = []

    def recording_model(z, logsnr, cond_tree):
        batch_sizes.append((z.shape[0], logsnr.shape[0], cond_tree["scale"].shape[0]))
        return _toy_model(z, logsnr, cond_tree)

    z = jnp.asarray(RNG.normal(size=(3, 4, 2)) * 3, jnp.float32)
    logsnr = jnp.array([-2.0, 0.5, 3.0])
    denoise = guidance.guided_denoiser(recording_model, cond, null, 5.0, "v", threshold_percentile=95.0)
    out = denoise(z, logsnr)
    assert batch_sizes == [(6, 6, 6)]
    x0_cond = param_lib.to_x0(_toy_model(z, logsnr, cond), z, logsnr, "v")
    x0_null = param_lib.to_x0(_toy_model(z, logsnr, null), z, logsnr, "v")
    guided = np.asarray(x0_null + 5.0 * (x0_cond - x0_null))
    np.testing.assert_allclose(out, _numpy_dynamic_threshold(guided, 95.0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("space", ["eps", "v"])
def test_guiding_in_any_linear_space_gives_the_same_x0(space):
    """Our x0-space guidance equals guiding eps (or v) predictions and converting the result to x0."""
    cond, null = _cond_and_null(3)
    z = jnp.asarray(RNG.normal(size=(3, 4, 2)), jnp.float32)
    logsnr = jnp.array([-1.0, 0.5, 2.0])
    weight = 3.0
    raw_cond, raw_null = _toy_model(z, logsnr, cond), _toy_model(z, logsnr, null)  # as 'x0' predictions
    guided_in_space = guidance.classifier_free_guidance(
        param_lib.from_x0(raw_cond, z, logsnr, space), param_lib.from_x0(raw_null, z, logsnr, space), weight)
    expected = param_lib.to_x0(guided_in_space, z, logsnr, space)
    denoise = guidance.guided_denoiser(_toy_model, cond, null, weight, "x0", threshold_percentile=None)
    np.testing.assert_allclose(denoise(z, logsnr), expected, rtol=1e-4, atol=1e-4)


def test_guided_denoiser_is_jittable_with_traced_weight():
    cond, null = _cond_and_null(2)
    z = jnp.asarray(RNG.normal(size=(2, 4, 2)), jnp.float32)
    logsnr = jnp.array([0.0, 1.0])

    @jax.jit
    def run(weight):
        return guidance.guided_denoiser(_toy_model, cond, null, weight, "v")(z, logsnr)

    eager = guidance.guided_denoiser(_toy_model, cond, null, 2.0, "v")(z, logsnr)
    np.testing.assert_allclose(run(2.0), eager, rtol=1e-5, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="percentile"):
        guidance.dynamic_threshold(jnp.ones((1, 2)), 150.0)
    with pytest.raises(ValueError, match="unknown parameterization"):
        guidance.guided_denoiser(_toy_model, {}, {}, 1.0, "score")


def _numpy_toy_x0(z, logsnr, scale, guided_v=None):
    """NumPy reference: the toy v model and v -> x0 = alpha z - sigma v."""
    alpha = np.sqrt(1 / (1 + np.exp(-logsnr)))[:, None, None]
    sigma = np.sqrt(1 / (1 + np.exp(logsnr)))[:, None, None]
    v = scale[:, None, None] * np.tanh(z) + 0.1 * logsnr[:, None, None] if guided_v is None else guided_v
    return alpha * z - sigma * v, v


def test_guidance_rescale_matches_its_definition_per_row():
    """Lin et al. (2024) eq. 15-16 on v predictions, with one phi per row, against NumPy."""
    z = RNG.normal(size=(3, 5, 4)).astype(np.float32)
    logsnr = np.array([-1.0, 0.0, 2.0], np.float32)
    scale = RNG.normal(size=3).astype(np.float32)
    weight, phi = np.array([4.0, 6.0, 2.0], np.float32), np.array([0.7, 0.0, 1.0], np.float32)
    _, v_cond = _numpy_toy_x0(z, logsnr, scale)
    _, v_null = _numpy_toy_x0(z, logsnr, np.zeros(3, np.float32))
    v_cfg = v_null + weight[:, None, None] * (v_cond - v_null)
    ratio = v_cond.std(axis=(1, 2), keepdims=True) / v_cfg.std(axis=(1, 2), keepdims=True)
    v_expected = phi[:, None, None] * v_cfg * ratio + (1 - phi[:, None, None]) * v_cfg
    expected, _ = _numpy_toy_x0(z, logsnr, scale, guided_v=v_expected)
    denoise = guidance.guided_denoiser(_toy_model, {"scale": jnp.asarray(scale)}, {"scale": jnp.zeros(3)},
                                       jnp.asarray(weight)[:, None, None], "v", None, rescale=jnp.asarray(phi))
    np.testing.assert_allclose(denoise(jnp.asarray(z), jnp.asarray(logsnr)), expected, rtol=1e-4, atol=1e-5)
    # phi = 1 keeps the conditional prediction's spread: the rescaled v has the conditional v's std.
    assert abs(v_expected[2].std() - v_cond[2].std()) < 1e-5


def test_guidance_interval_guides_only_inside_the_noise_range():
    """Rows whose log-SNR is outside their interval get the conditional prediction (weight 1)."""
    z = RNG.normal(size=(4, 3, 2)).astype(np.float32)
    logsnr = np.array([-3.0, 0.0, 0.0, 4.0], np.float32)
    interval = np.array([[-1.0, 1.0], [-1.0, 1.0], [1.0, 5.0], [1.0, 5.0]], np.float32)
    scale = RNG.normal(size=4).astype(np.float32)
    weight = 5.0
    x0_cond, v_cond = _numpy_toy_x0(z, logsnr, scale)
    _, v_null = _numpy_toy_x0(z, logsnr, np.zeros(4, np.float32))
    x0_guided, _ = _numpy_toy_x0(z, logsnr, scale, guided_v=v_null + weight * (v_cond - v_null))
    inside = np.array([False, True, False, True])
    expected = np.where(inside[:, None, None], x0_guided, x0_cond)
    denoise = guidance.guided_denoiser(_toy_model, {"scale": jnp.asarray(scale)}, {"scale": jnp.zeros(4)}, weight,
                                       "v", None, logsnr_interval=jnp.asarray(interval))
    np.testing.assert_allclose(denoise(jnp.asarray(z), jnp.asarray(logsnr)), expected, rtol=1e-4, atol=1e-5)


def test_negative_condition_replaces_the_unconditional_branch():
    """Guidance away from a negative condition: unconditional + w (cond - negative) with the null half taking it."""
    z = RNG.normal(size=(2, 3, 2)).astype(np.float32)
    logsnr = np.array([-0.5, 1.0], np.float32)
    scale, negative = RNG.normal(size=2).astype(np.float32), RNG.normal(size=2).astype(np.float32)
    _, v_cond = _numpy_toy_x0(z, logsnr, scale)
    _, v_negative = _numpy_toy_x0(z, logsnr, negative)
    expected, _ = _numpy_toy_x0(z, logsnr, scale, guided_v=v_negative + 3.0 * (v_cond - v_negative))
    denoise = guidance.guided_denoiser(_toy_model, {"scale": jnp.asarray(scale)}, {"scale": jnp.asarray(negative)},
                                       3.0, "v", None)
    np.testing.assert_allclose(denoise(jnp.asarray(z), jnp.asarray(logsnr)), expected, rtol=1e-4, atol=1e-5)


def test_learned_variance_is_the_conditional_halfs_and_is_not_thresholded():
    """Raw outputs [eps, v]: eps is guided and converted to x0, then thresholded; v is the conditional's."""
    rng = np.random.default_rng(4)
    z = jnp.asarray(rng.standard_normal((2, 4, 4, 3)), jnp.float32)
    logsnr = jnp.array([-1.0, 2.0])
    raw = {name: jnp.asarray(rng.uniform(-3, 3, (2, 4, 4, 6)), jnp.float32) for name in ("cond", "null")}

    def model_fn(z, logsnr, c):  # c: 1 for the conditional rows; the guided batch is [cond rows, null rows]
        tiled = {name: jnp.tile(value, (len(c) // 2, 1, 1, 1)) for name, value in raw.items()}
        return jnp.where(c[:, None, None, None] > 0.5, tiled["cond"], tiled["null"])

    output = guidance.guided_denoiser(model_fn, jnp.ones((2,)), jnp.zeros((2,)), 3.0, "eps",
                                      threshold_percentile=90.0, learned_variance=True)(z, logsnr)
    eps = raw["null"][..., :3] + 3.0 * (raw["cond"][..., :3] - raw["null"][..., :3])
    alpha, sigma = (np.sqrt(1 / (1 + np.exp(sign * np.asarray(logsnr))))[:, None, None, None] for sign in (-1, 1))
    x0 = (np.asarray(z) - sigma * np.asarray(eps)) / alpha
    scale = np.maximum(np.percentile(np.abs(x0).reshape(2, -1), 90.0, axis=1), 1.0)[:, None, None, None]
    np.testing.assert_allclose(output.x0, np.clip(x0, -scale, scale) / scale, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(output.variance_interpolation, raw["cond"][..., 3:])
    thresholded = guidance.thresholded(lambda z, logsnr: output, 50.0)(z, logsnr)
    np.testing.assert_array_equal(thresholded.variance_interpolation, raw["cond"][..., 3:])
    assert float(jnp.max(jnp.abs(thresholded.x0))) <= 1.0 + 1e-6


def test_thresholded_caps_the_scale_when_told():
    """A clip whose 95th percentile of |x0| is 4: uncapped it is divided by 4, capped (IF: 1.5) by 1.5."""
    x0 = jnp.full((1, 2, 4, 4, 3), 4.0)
    uncapped = guidance.thresholded(lambda z, logsnr: x0, 95.0)(x0, jnp.zeros((1,)))
    capped = guidance.thresholded(lambda z, logsnr: x0, 95.0, 1.5)(x0, jnp.zeros((1,)))
    np.testing.assert_allclose(uncapped, np.ones(x0.shape), rtol=1e-6)
    np.testing.assert_allclose(capped, np.ones(x0.shape), rtol=1e-6)  # clip(4, -1.5, 1.5) / 1.5
    half = x0.at[..., 0].set(1.2)  # 2/3 of the values at 4, 1/3 at 1.2: percentile 4, scale 1.5 when capped
    np.testing.assert_allclose(guidance.thresholded(lambda z, logsnr: half, 95.0, 1.5)(x0, jnp.zeros((1,)))[..., 0],
                               np.full((1, 2, 4, 4), 0.8), rtol=1e-6)
    np.testing.assert_allclose(guidance.thresholded(lambda z, logsnr: half, 95.0)(x0, jnp.zeros((1,)))[..., 0],
                               np.full((1, 2, 4, 4), 0.3), rtol=1e-6)


def test_a_cap_of_one_is_static_thresholding():
    """Scale capped at 1: values clipped to [-1, 1] and never divided, whatever the percentile."""
    x0 = (RNG.normal(size=(2, 3, 5, 5, 3)) * 2.0).astype(np.float32)
    out = guidance.thresholded(lambda z, logsnr: x0, 99.5, 1.0)(x0, jnp.zeros((2,)))
    np.testing.assert_array_equal(out, np.clip(x0, -1.0, 1.0))
    assert np.mean(np.abs(x0) > 1.0) > 0.3  # the clip matters: a third of the values lie outside [-1, 1]
