"""Condition fidelity metrics against hand-computed values."""

import numpy as np
import pytest

from lumiere_jax.evaluate import condition_fidelity


def test_first_frame_and_static_region_errors():
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (4, 6, 3))
    region = np.zeros((4, 6, 1))
    region[:2, :3] = 1.0  # 6 of 24 pixels animate
    video = np.repeat(image[None], 3, axis=0)  # [3, 4, 6, 3]
    video[0] += 0.3  # first frame off by 0.3 everywhere
    video[1:, :2, :3] = -video[1:, :2, :3]  # the animated region changes on later frames
    video[2, 3, 5] += 0.9  # one static pixel of the last frame off by 0.9 (3 channels)
    assert condition_fidelity.first_frame_error(video, image) == pytest.approx(0.3)
    # Static pixels: 18 per frame, 3 frames, 3 channels; errors 0.3 on frame 0 and one pixel of 0.9.
    expected = (18 * 3 * 0.3 + 3 * 0.9) / (18 * 3 * 3)
    assert condition_fidelity.static_region_error(video, image, region) == pytest.approx(expected)


def test_larger_generated_frames_are_area_averaged_to_the_image():
    image = np.random.default_rng(1).uniform(-1, 1, (2, 2, 3))
    upsampled = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)
    checker = np.indices((4, 4)).sum(axis=0)[..., None] % 2 * 0.2 - 0.1  # averages to 0 over 2x2 blocks
    video = np.stack([upsampled + checker] * 2)
    assert condition_fidelity.first_frame_error(video, image) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="cannot be area-averaged to 3x3"):
        condition_fidelity.first_frame_error(np.zeros((1, 4, 4, 3)), np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="covers the whole frame"):
        condition_fidelity.static_region_error(video, image, np.ones((2, 2, 1)))
