"""Fréchet distance between Gaussians fitted to feature sets (FVD with I3D features, FID-style).

    d^2 = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2))

`tr((S_1 S_2)^(1/2))` equals the sum of the square roots of the eigenvalues of the symmetric positive
semi-definite matrix `S_1^(1/2) S_2 S_1^(1/2)` (same spectrum as `S_1 S_2`), so it is computed with two
symmetric eigen-decompositions in float64: no scipy, no complex round-off, no singular-matrix failures.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
    matrix = np.asarray(matrix, np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def trace_sqrt_product(sigma_1: np.ndarray, sigma_2: np.ndarray) -> float:
    """tr((S_1 S_2)^(1/2)) for symmetric PSD S_1, S_2."""
    root_1 = sqrtm_psd(sigma_1)
    inner = root_1 @ np.asarray(sigma_2, np.float64) @ root_1
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def frechet_distance(mu_1: np.ndarray, sigma_1: np.ndarray, mu_2: np.ndarray, sigma_2: np.ndarray) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu_1, sigma_1) and N(mu_2, sigma_2)."""
    mu_1, mu_2 = np.asarray(mu_1, np.float64), np.asarray(mu_2, np.float64)
    sigma_1, sigma_2 = np.asarray(sigma_1, np.float64), np.asarray(sigma_2, np.float64)
    if mu_1.shape != mu_2.shape or sigma_1.shape != sigma_2.shape or sigma_1.shape != mu_1.shape * 2:
        raise ValueError(f"statistics do not match: mu {mu_1.shape} vs {mu_2.shape}, sigma {sigma_1.shape} vs "
                         f"{sigma_2.shape}; compute both with the same feature network")
    distance = float(np.sum((mu_1 - mu_2) ** 2) + np.trace(sigma_1) + np.trace(sigma_2)
                     - 2.0 * trace_sqrt_product(sigma_1, sigma_2))
    return max(distance, 0.0)


@dataclasses.dataclass
class GaussianStats:
    """Running float64 sums of features, so statistics accumulate batch by batch."""

    dim: int
    count: int = 0
    total: np.ndarray | None = None         # [D]
    outer_total: np.ndarray | None = None   # [D, D]

    def __post_init__(self):
        if self.total is None:
            self.total = np.zeros(self.dim, np.float64)
        if self.outer_total is None:
            self.outer_total = np.zeros((self.dim, self.dim), np.float64)

    def update(self, features: np.ndarray) -> None:
        """features: [N, D]."""
        features = np.asarray(features, np.float64)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features of shape {features.shape} do not fit [N, {self.dim}]")
        self.count += features.shape[0]
        self.total += features.sum(axis=0)
        self.outer_total += features.T @ features

    def mean_and_covariance(self) -> tuple[np.ndarray, np.ndarray]:
        """Sample mean [D] and unbiased covariance [D, D] (needs at least two features)."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.count}; evaluate more videos")
        mean = self.total / self.count
        covariance = (self.outer_total - self.count * np.outer(mean, mean)) / (self.count - 1)
        return mean, covariance

    def save(self, path: str) -> None:
        """Writes mean, covariance and count to an .npz (reusable reference statistics)."""
        mean, covariance = self.mean_and_covariance()
        np.savez(path, mu=mean, sigma=covariance, count=np.int64(self.count))


def load_stats(path: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(mu [D], sigma [D, D], count) from an .npz written by `GaussianStats.save`."""
    with np.load(path) as data:
        missing = {"mu", "sigma", "count"} - set(data.files)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)}; write reference statistics with GaussianStats.save")
        return data["mu"], data["sigma"], int(data["count"])
