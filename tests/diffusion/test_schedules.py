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


def test_cosine_endpoints_and_unclipped_form():
    schedule = schedules.get_schedule("cosine", logsnr_min=-15.0, logsnr_max=12.0)
    np.testing.assert_allclose(schedule(np.float32(0.0)), 12.0, rtol=1e-5)
    np.testing.assert_allclose(schedule(np.float32(1.0)), -15.0, rtol=1e-5)
    # Inside the limits it is the cosine schedule alpha = cos(pi u / 2) at a reparameterised time u.
    angle_min, angle_max = math.atan(math.exp(-6.0)), math.atan(math.exp(7.5))
    u = (angle_min + T * (angle_max - angle_min)) / (math.pi / 2)
    alpha_squared = np.cos(np.pi * u / 2) ** 2
    expected = np.log(alpha_squared / (1 - alpha_squared))
    np.testing.assert_allclose(schedule(T)[1:-1], expected[1:-1], rtol=1e-3, atol=1e-3)
    # Midpoint of the symmetric default schedule is logsnr = 0.
    np.testing.assert_allclose(schedules.logsnr_cosine(np.float32(0.5)), 0.0, atol=1e-5)


def test_shift_equals_formula():
    shifted = schedules.get_schedule("shifted_cosine", resolution=512, base_resolution=64)
    expected_shift = 2 * math.log(64 / 512)
    np.testing.assert_allclose(shifted(T) - schedules.logsnr_cosine(T), expected_shift, atol=1e-4)
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
