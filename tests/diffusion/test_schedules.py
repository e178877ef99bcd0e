"""Schedules: monotone, exact endpoints, the resolution shift formula, variance preservation."""

import math

import numpy as np
import pytest

from lumiere_jax.diffusion import schedules

T = np.linspace(0.0, 1.0, 1001, dtype=np.float32)


@pytest.mark.parametrize("name,kwargs", [
    ("cosine", {}),
    ("cosine", {"logsnr_min": -15.0, "logsnr_max": 10.0}),
    ("shifted_cosine", {"resolution": 256, "base_resolution": 64}),
])
def test_schedules_strictly_decrease(name, kwargs):
    logsnr = np.asarray(schedules.get_schedule(name, **kwargs)(T))
    assert np.all(np.isfinite(logsnr))
    assert np.all(np.diff(logsnr) < 0)


def test_cosine_endpoints_and_the_cosine_form():
    schedule = schedules.get_schedule("cosine", logsnr_min=-15.0, logsnr_max=12.0)
    np.testing.assert_allclose(schedule(np.float32(0.0)), 12.0, rtol=1e-5)
    np.testing.assert_allclose(schedule(np.float32(1.0)), -15.0, rtol=1e-5)
    # With the default (wide) limits it is Nichol & Dhariwal's cosine schedule (offset s = 0):
    # alpha_bar(t) = alpha^2 = cos^2(pi t / 2).
    inner = T[50:-50]
    alpha_squared = 1.0 / (1.0 + np.exp(-np.asarray(schedules.logsnr_cosine(inner), np.float64)))
    np.testing.assert_allclose(alpha_squared, np.cos(np.pi * inner.astype(np.float64) / 2) ** 2, atol=1e-4)
    # Midpoint of the symmetric default schedule is logsnr = 0.
    np.testing.assert_allclose(schedules.logsnr_cosine(np.float32(0.5)), 0.0, atol=1e-5)


@pytest.mark.parametrize("t", [0.3, 0.5, 0.7])
def test_shifted_schedule_pooled_to_base_resolution_has_the_base_snr(t):
    """The meaning of the resolution shift ("simple diffusion"): noise a smooth image at resolution r with the
    shifted schedule, average-pool it to the base resolution, and the pooled image has the base schedule's
    signal-to-noise ratio (pooling k x k pixels keeps the signal and divides the noise variance by k^2).
    Measured by Monte Carlo, not by the shift formula."""
    resolution, base = 32, 8
    shifted = schedules.get_schedule("shifted_cosine", resolution=resolution, base_resolution=base)
    alpha, sigma = (float(v) for v in schedules.alpha_sigma(shifted(np.float32(t))))
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, (1000, 1, 1))  # smooth: one value per image
    z = alpha * x0 + sigma * rng.standard_normal((1000, resolution, resolution))
    factor = resolution // base
    pooled = z.reshape(1000, base, factor, base, factor).mean(axis=(2, 4))
    noise_variance = np.var(pooled - alpha * x0)
    pooled_logsnr = math.log(alpha**2 / noise_variance)
    assert abs(pooled_logsnr - float(schedules.logsnr_cosine(np.float32(t)))) < 0.03


def test_shift_direction_and_identity():
    assert schedules.resolution_shift(512, 64) < 0  # higher resolution -> noisier at the same t
    np.testing.assert_allclose(
        schedules.logsnr_shifted_cosine(T, resolution=64, base_resolution=64), schedules.logsnr_cosine(T))


def test_alpha_sigma_is_variance_preserving_and_matches_logsnr():
    logsnr = np.linspace(-20, 20, 81, dtype=np.float32)
    alpha, sigma = (np.asarray(v, np.float64) for v in schedules.alpha_sigma(logsnr))
    np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, atol=1e-6)
    middle = np.abs(logsnr) <= 10
    np.testing.assert_allclose(np.log(alpha**2 / sigma**2)[middle], logsnr[middle], atol=1e-3)


def test_get_schedule_errors_name_the_fix():
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        schedules.get_schedule("linear")
    with pytest.raises(ValueError, match="resolution"):
        schedules.get_schedule("shifted_cosine", base_resolution=64)
    with pytest.raises(ValueError, match="logsnr_min"):
        schedules.logsnr_cosine(0.5, logsnr_min=5.0, logsnr_max=-5.0)
