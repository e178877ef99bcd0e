"""The SSR check's pieces against NumPy: PSNR's closed form, area downsampling as block means, bilinear upsampling as
a NumPy interpolation with aligned pixel centres and clamped edges."""

import numpy as np
import pytest

from lumiere_jax.evaluate import upsampling


def numpy_bilinear(video: np.ndarray, size: int) -> np.ndarray:
    """Output pixel i samples input coordinate (i + 0.5) * h / size - 0.5, clamped to the edge pixels."""
    height, width = video.shape[-3:-1]

    def weights(source: int) -> np.ndarray:  # [size, source]
        position = np.clip((np.arange(size) + 0.5) * source / size - 0.5, 0, source - 1)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, source - 1)
        matrix = np.zeros((size, source))
        matrix[np.arange(size), low] += 1 - (position - low)
        matrix[np.arange(size), high] += position - low
        return matrix

    return np.einsum("ih,...hwc,jw->...ijc", weights(height), video, weights(width))


def test_psnr_closed_form():
    reference = np.zeros((2, 4, 4, 3))
    assert upsampling.psnr(reference + 0.2, reference) == pytest.approx(10 * np.log10(4 / 0.04))
    noisy = reference + np.random.default_rng(0).normal(0, 0.1, reference.shape)
    assert upsampling.psnr(noisy, reference) == pytest.approx(10 * np.log10(4 / np.mean(noisy ** 2)))
    assert upsampling.psnr(reference, reference) == float("inf")
    with pytest.raises(ValueError, match="equal shapes"):
        upsampling.psnr(reference, reference[:1])


def test_area_downsample_is_the_block_mean():
    video = np.random.default_rng(1).uniform(-1, 1, (2, 3, 8, 8, 3)).astype(np.float32)
    expected = video.reshape(2, 3, 4, 2, 4, 2, 3).mean(axis=(3, 5))
    np.testing.assert_allclose(upsampling.area_downsample(video, 4), expected, atol=1e-6)


@pytest.mark.parametrize("source, size", [(4, 8), (32, 64), (5, 15)])
def test_bilinear_upsample_matches_numpy(source, size):
    video = np.random.default_rng(2).uniform(-1, 1, (2, 3, source, source, 3)).astype(np.float32)
    np.testing.assert_allclose(upsampling.bilinear_upsample(video, size), numpy_bilinear(video, size), atol=1e-5)
    constant = np.full((1, source, source, 3), 0.25, np.float32)
    np.testing.assert_allclose(upsampling.bilinear_upsample(constant, size), 0.25, atol=1e-6)
