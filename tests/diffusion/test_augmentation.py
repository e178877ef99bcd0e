"""Noise conditioning augmentation: levels drawn or given, noise applied as the forward process."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumiere_jax.diffusion import augmentation
from lumiere_jax.diffusion import schedules

SCHEDULE = schedules.get_schedule("cosine")
LOW_RES = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, size=(4, 3, 8, 8, 3)), jnp.float32)


def _implied_noise(noised, low_res, logsnr):
    alpha, sigma = (np.asarray(v)[:, None, None, None, None] for v in schedules.alpha_sigma(logsnr))
    return (np.asarray(noised) - alpha * np.asarray(low_res)) / sigma


def test_given_t_and_given_logsnr_agree():
    rng = jax.random.PRNGKey(0)
    t = jnp.array([0.0, 0.1, 0.4, 0.9])
    noised_t, logsnr_t = augmentation.noise_augment(rng, LOW_RES, SCHEDULE, t=t)
    noised_l, logsnr_l = augmentation.noise_augment(rng, LOW_RES, SCHEDULE, aug_logsnr=SCHEDULE(t))
    np.testing.assert_allclose(logsnr_t, SCHEDULE(t))
    np.testing.assert_allclose(noised_t, noised_l)
    # Same Gaussian noise for every example, scaled by the forward process.
    eps = _implied_noise(noised_t, LOW_RES, logsnr_t)
    assert abs(eps.std() - 1.0) < 0.05 and abs(eps.mean()) < 0.05
    # t = 0 leaves the input essentially clean.
    np.testing.assert_allclose(noised_t[0], LOW_RES[0], atol=1e-3)


def test_scalar_level_broadcasts_to_batch():
    _, logsnr = augmentation.noise_augment(jax.random.PRNGKey(1), LOW_RES, SCHEDULE, t=0.25)
    assert logsnr.shape == (4,)
    np.testing.assert_allclose(logsnr, np.full(4, float(SCHEDULE(0.25))))


def test_random_levels_within_max_t():
    logsnr = augmentation.augmentation_logsnr(jax.random.PRNGKey(2), 4096, SCHEDULE, max_t=0.3)
    assert np.all(np.asarray(logsnr) >= float(SCHEDULE(0.3)) - 1e-4)
    # Uniform t: the median level sits near t = 0.15.
    np.testing.assert_allclose(np.median(np.asarray(logsnr)), float(SCHEDULE(0.15)), atol=0.1)
    noised, drawn = augmentation.noise_augment(jax.random.PRNGKey(3), LOW_RES, SCHEDULE, max_t=0.3)
    assert drawn.shape == (4,) and len(set(np.asarray(drawn).tolist())) == 4
    eps = _implied_noise(noised, LOW_RES, drawn)
    assert abs(eps.std() - 1.0) < 0.1


def test_errors():
    with pytest.raises(ValueError, match="not both"):
        augmentation.noise_augment(jax.random.PRNGKey(0), LOW_RES, SCHEDULE, t=0.1, aug_logsnr=1.0)
    with pytest.raises(ValueError, match="max_t"):
        augmentation.augmentation_logsnr(jax.random.PRNGKey(0), 2, SCHEDULE, max_t=0.0)
