"""Fréchet distance against SciPy's matrix square root, and its invariants."""

import numpy as np
import pytest
import scipy.linalg

from lumiere_jax.evaluate import frechet


def scipy_reference(mu_1, sigma_1, mu_2, sigma_2):
    """The usual FID/FVD formula with scipy.linalg.sqrtm of the (non-symmetric) product."""
    root = scipy.linalg.sqrtm(sigma_1 @ sigma_2)
    return float(np.sum((mu_1 - mu_2) ** 2) + np.trace(sigma_1) + np.trace(sigma_2) - 2 * np.trace(root.real))


def random_features(rng, count, dim, shift=0.0):
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    return rng.normal(size=(count, dim)) @ mixing + shift


def stats(features):
    return features.mean(axis=0), np.cov(features, rowvar=False)


def test_matches_scipy_sqrtm_on_random_features():
    rng = np.random.default_rng(0)
    first, second = random_features(rng, 300, 16), random_features(rng, 300, 16, shift=0.3)
    expected = scipy_reference(*stats(first), *stats(second))
    assert frechet.frechet_distance(*stats(first), *stats(second)) == pytest.approx(expected, rel=1e-8, abs=1e-8)


def test_rank_deficient_covariances_match_scipy_and_stay_finite():
    rng = np.random.default_rng(1)
    # Fewer samples than dimensions: singular covariances (the usual failure of naive sqrtm code).
    first, second = random_features(rng, 12, 20), random_features(rng, 12, 20, shift=1.0)
    distance = frechet.frechet_distance(*stats(first), *stats(second))
    assert np.isfinite(distance)
    assert distance == pytest.approx(scipy_reference(*stats(first), *stats(second)), rel=1e-5)


def test_zero_for_identical_sets():
    rng = np.random.default_rng(2)
    features = random_features(rng, 200, 32)
    assert frechet.frechet_distance(*stats(features), *stats(features)) == pytest.approx(0.0, abs=1e-8)


def test_grows_with_the_shift_and_equals_squared_mean_difference_for_equal_covariances():
    rng = np.random.default_rng(3)
    features = random_features(rng, 500, 8)
    distances = [frechet.frechet_distance(*stats(features), *stats(features + shift)) for shift in (0.1, 0.5, 2.0)]
    assert distances[0] < distances[1] < distances[2]
    # Same covariance: d^2 = |delta mu|^2 = 8 * shift^2.
    assert distances[2] == pytest.approx(8 * 2.0 ** 2, rel=1e-8)


def test_closed_form_for_diagonal_gaussians():
    mu_1, mu_2 = np.zeros(3), np.array([1.0, 0.0, 2.0])
    var_1, var_2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = 5.0 + np.sum((np.sqrt(var_1) - np.sqrt(var_2)) ** 2)
    assert frechet.frechet_distance(mu_1, np.diag(var_1), mu_2, np.diag(var_2)) == pytest.approx(expected)


def test_streamed_statistics_equal_numpy_and_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    features = random_features(rng, 101, 6, shift=5.0)
    accumulator = frechet.GaussianStats(6)
    for chunk in np.array_split(features, 7):
        accumulator.update(chunk.astype(np.float32))
    mean, covariance = accumulator.mean_and_covariance()
    np.testing.assert_allclose(mean, features.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(covariance, np.cov(features, rowvar=False), rtol=1e-5, atol=1e-6)
    accumulator.save(str(tmp_path / "stats.npz"))
    mu, sigma, count = frechet.load_stats(str(tmp_path / "stats.npz"))
    assert count == 101 and np.array_equal(mu, mean) and np.array_equal(sigma, covariance)


def test_mismatched_statistics_are_an_error():
    with pytest.raises(ValueError, match="same feature network"):
        frechet.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="at least 2"):
        frechet.GaussianStats(3).mean_and_covariance()
