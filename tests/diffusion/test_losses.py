"""Training loss: targets, weights, masks, and per-example values against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumiere_jax.diffusion import losses
from lumiere_jax.diffusion import schedules

RNG = np.random.default_rng(0)
X0 = RNG.uniform(-1, 1, size=(4, 3, 6, 6, 3)).astype(np.float32)
EPS = RNG.normal(size=X0.shape).astype(np.float32)
PREDICTION = RNG.normal(size=X0.shape).astype(np.float32)
LOGSNR = np.array([-6.0, -1.0, 2.0, 7.0], np.float32)


def _numpy_v_target():
    alpha = np.sqrt(1 / (1 + np.exp(-LOGSNR)))[:, None, None, None, None]
    sigma = np.sqrt(1 / (1 + np.exp(LOGSNR)))[:, None, None, None, None]
    return alpha * EPS - sigma * X0


def test_noisy_sample_matches_forward_process():
    alpha = np.sqrt(1 / (1 + np.exp(-LOGSNR)))[:, None, None, None, None]
    sigma = np.sqrt(1 / (1 + np.exp(LOGSNR)))[:, None, None, None, None]
    np.testing.assert_allclose(losses.noisy_sample(X0, EPS, LOGSNR), alpha * X0 + sigma * EPS, atol=1e-6)


def test_default_loss_is_v_mse():
    expected = np.mean((PREDICTION - _numpy_v_target()) ** 2, axis=(1, 2, 3, 4))
    np.testing.assert_allclose(losses.per_example_loss(PREDICTION, X0, EPS, LOGSNR), expected, rtol=1e-5)
    np.testing.assert_allclose(losses.diffusion_loss(PREDICTION, X0, EPS, LOGSNR), expected.mean(), rtol=1e-5)


@pytest.mark.parametrize("parameterization,target", [("eps", EPS), ("x0", X0)])
def test_other_parameterisations(parameterization, target):
    expected = np.mean((PREDICTION - target) ** 2)
    np.testing.assert_allclose(
        losses.diffusion_loss(PREDICTION, X0, EPS, LOGSNR, parameterization), expected, rtol=1e-5)


def test_weights_and_mask():
    mask = (RNG.uniform(size=X0.shape[:-1] + (1,)) > 0.5).astype(np.float32)  # [B, T, H, W, 1]
    mask[2] = 0.0  # an example with nothing to learn
    squared = (PREDICTION - _numpy_v_target()) ** 2 * mask
    counts = np.broadcast_to(mask, X0.shape).sum(axis=(1, 2, 3, 4))
    expected_per_example = np.where(counts > 0, squared.sum(axis=(1, 2, 3, 4)) / np.maximum(counts, 1), 0.0)
    per_example = losses.per_example_loss(PREDICTION, X0, EPS, LOGSNR, mask=mask)
    np.testing.assert_allclose(per_example, expected_per_example, rtol=1e-5)
    weights = np.array([1.0, 0.5, 2.0, 0.0], np.float32)
    expected = np.sum(weights * expected_per_example) / weights.sum()
    np.testing.assert_allclose(
        losses.diffusion_loss(PREDICTION, X0, EPS, LOGSNR, weights=weights, mask=mask), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="one entry per example"):
        losses.diffusion_loss(PREDICTION, X0, EPS, LOGSNR, weights=np.ones(3))


def test_perfect_prediction_has_zero_loss_and_gradient_points_at_target():
    target = _numpy_v_target()
    assert float(losses.diffusion_loss(target, X0, EPS, LOGSNR)) < 1e-10
    gradient = jax.grad(lambda p: losses.diffusion_loss(p, X0, EPS, LOGSNR))(jnp.asarray(PREDICTION))
    np.testing.assert_allclose(gradient, 2 * (PREDICTION - target) / PREDICTION.size, rtol=1e-4, atol=1e-9)


def test_sample_noisy_inputs_consistent():
    schedule = schedules.get_schedule("cosine")
    z, logsnr, eps, t = losses.sample_noisy_inputs(jax.random.PRNGKey(0), jnp.asarray(X0), schedule)
    assert z.shape == X0.shape and logsnr.shape == t.shape == (4,)
    assert np.all((np.asarray(t) >= 0) & (np.asarray(t) <= 1))
    np.testing.assert_allclose(logsnr, schedule(t), rtol=1e-6)
    np.testing.assert_allclose(z, losses.noisy_sample(X0, eps, logsnr), atol=1e-6)
