"""Shared closed-form reference for diffusion tests: Gaussian data and its exact denoiser."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from lumiere_jax.diffusion import parameterization


@dataclasses.dataclass(frozen=True)
class GaussianData:
    """Data `x0 ~ N(mean, covariance)` on the last axis; everything else is batch (or frames)."""

    mean: np.ndarray  # [d]
    covariance: np.ndarray  # [d, d]

    def sample(self, rng: np.random.Generator, num: int) -> np.ndarray:
        return rng.multivariate_normal(self.mean, self.covariance, size=num).astype(np.float32)

    def denoise(self, z, logsnr):
        """Exact `E[x0 | z] = mean + alpha Sigma (alpha^2 Sigma + sigma^2 I)^-1 (z - alpha mean)`.

        `z: [B, ..., d]`, `logsnr: [B]`; uses the eigenbasis of Sigma so it broadcasts over any middle dims.
        """
        eigenvalues, eigenvectors = (a.astype(np.float32) for a in np.linalg.eigh(self.covariance))
        alpha, sigma = parameterization.alpha_sigma_like(logsnr, z)
        coordinates = (z - alpha * self.mean.astype(np.float32)) @ eigenvectors
        gain = eigenvalues / (jnp.square(alpha) * eigenvalues + jnp.square(sigma))
        return self.mean.astype(np.float32) + alpha * (coordinates * gain) @ eigenvectors.T


@pytest.fixture
def gaussian_data() -> GaussianData:
    mean = np.array([0.5, -0.3, 0.2], np.float64)
    factor = np.array([[0.6, 0.0, 0.0], [0.3, 0.4, 0.0], [-0.2, 0.25, 0.3]])
    return GaussianData(mean=mean, covariance=factor @ factor.T)
