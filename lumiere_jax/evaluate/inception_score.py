"""Inception Score from classifier logits (video IS: C3D fine-tuned on UCF101, Saito et al. 2017/2020).

    IS = exp( E_x KL(p(y|x) || p(y)) ),   p(y) = E_x p(y|x)   (expectations within one split)

Returned as the mean and standard deviation over `num_splits` contiguous splits, computed in float64.
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def inception_score(logits: np.ndarray, num_splits: int = 1) -> tuple[float, float]:
    """logits: [N, K] -> (mean IS, std IS) over `num_splits` equal contiguous splits."""
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2:
        raise ValueError(f"logits must be [N, K], got shape {logits.shape}")
    if not 1 <= num_splits <= logits.shape[0]:
        raise ValueError(f"num_splits={num_splits} must be in [1, N={logits.shape[0]}]")
    scores = []
    for split in np.array_split(log_softmax(logits), num_splits):
        probabilities = np.exp(split)
        log_marginal = np.log(probabilities.mean(axis=0))
        kl = (probabilities * (split - log_marginal)).sum(axis=-1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
