"""Inception Score against a SciPy reference and its closed-form extremes."""

import numpy as np
import pytest
import scipy.special
import scipy.stats

from lumiere_jax.evaluate import inception_score


def reference_is(logits, num_splits):
    scores = []
    for split in np.array_split(logits, num_splits):
        probabilities = scipy.special.softmax(split.astype(np.float64), axis=1)
        marginal = probabilities.mean(axis=0)
        scores.append(np.exp(np.mean([scipy.stats.entropy(row, marginal) for row in probabilities])))
    return np.mean(scores), np.std(scores)


@pytest.mark.parametrize("num_splits", [1, 4])
def test_matches_scipy_reference(num_splits):
    logits = np.random.default_rng(0).normal(scale=3.0, size=(103, 11)).astype(np.float32)
    mean, std = inception_score.inception_score(logits, num_splits)
    expected_mean, expected_std = reference_is(logits, num_splits)
    assert mean == pytest.approx(expected_mean, rel=1e-10)
    assert std == pytest.approx(expected_std, rel=1e-8, abs=1e-12)


def test_extremes_uniform_predictions_give_one_confident_distinct_give_num_classes():
    assert inception_score.inception_score(np.zeros((20, 7)))[0] == pytest.approx(1.0)
    confident = np.tile(np.eye(7) * 200.0, (3, 1))  # every class equally often, each prediction certain
    assert inception_score.inception_score(confident)[0] == pytest.approx(7.0, rel=1e-6)


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        inception_score.inception_score(np.zeros(5))
    with pytest.raises(ValueError, match="num_splits"):
        inception_score.inception_score(np.zeros((3, 2)), num_splits=4)
