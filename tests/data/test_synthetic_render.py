"""The renderer draws what the attributes and positions say, and captions describe them."""

import itertools
import re

import numpy as np
import pytest

from lumiere_jax.data import synthetic_render as render


def _segment_centroids(frames: np.ndarray, color: str) -> np.ndarray:
    """Centroid (y, x) of the pixels of `color` in each frame, pixel centres at +0.5: [T, 2]."""
    is_object = np.all(np.abs(frames.astype(int) - np.array(render.COLORS[color])) < 40, axis=-1)
    centroids = []
    for mask in is_object:
        ys, xs = np.nonzero(mask)
        assert ys.size, "object not visible"
        centroids.append([ys.mean() + 0.5, xs.mean() + 0.5])
    return np.array(centroids)


def test_colors_are_well_separated():
    distances = [np.linalg.norm(np.subtract(a, b))
                 for a, b in itertools.combinations(render.COLORS.values(), 2)]
    assert min(distances) >= 170


@pytest.mark.parametrize("shape", render.SHAPES)
@pytest.mark.parametrize("motion", render.MOTIONS)
def test_drawn_centroid_matches_stored_position(shape, motion):
    rng = np.random.default_rng(hash((shape, motion)) % 2**32)
    height, width, num_frames = 48, 64, 12
    positions = render.trajectory(motion, "fast", num_frames, height, width, rng)
    scene = render.Scene(shape, "red", "blue", motion, "fast", render.object_radius(height, width),
                         positions)
    frames = render.render(scene, height, width)
    assert frames.shape == (num_frames, height, width, 3) and frames.dtype == np.uint8
    np.testing.assert_allclose(_segment_centroids(frames, "red"), positions, atol=0.6)
    # The object never leaves the frame: its area is the same in every frame (up to rasterisation).
    areas = np.all(frames == render.COLORS["red"], axis=-1).sum(axis=(1, 2))
    assert areas.min() > 0.8 * areas.max()


def test_trajectories_follow_the_motion_words():
    rng = np.random.default_rng(0)
    height = width = 64
    num_frames = 40
    for speed in render.SPEEDS:
        left = render.trajectory("left", speed, num_frames, height, width, rng)
        assert np.all(np.diff(left[:, 1]) < 0) and np.ptp(left[:, 0]) == 0
        down = render.trajectory("down", speed, num_frames, height, width, rng)
        assert np.all(np.diff(down[:, 0]) > 0) and np.ptp(down[:, 1]) == 0
        bouncing = render.trajectory("bouncing", speed, num_frames, height, width, rng)
        assert np.ptp(bouncing[:, 1]) == 0 and np.ptp(bouncing[:, 0]) > 0.5 * height
        still = render.trajectory("still", speed, num_frames, height, width, rng)
        assert np.ptp(still, axis=0).max() == 0
    # Clockwise on screen (y down): the angle atan2(y - cy, x - cx) increases.
    for motion, sign in (("clockwise", 1), ("counterclockwise", -1)):
        circle = render.trajectory(motion, "slow", num_frames, height, width, rng)
        centre = circle.mean(axis=0)  # one full cycle: the mean is the centre
        angles = np.unwrap(np.arctan2(circle[:, 0] - centre[0], circle[:, 1] - centre[1]))
        assert np.all(sign * np.diff(angles) > 0)
        np.testing.assert_allclose(abs(angles[-1] - angles[0]), 2 * np.pi, rtol=0.03)
    slow = np.abs(np.diff(render.trajectory("right", "slow", num_frames, height, width, rng)[:, 1])).sum()
    fast = np.abs(np.diff(render.trajectory("right", "fast", num_frames, height, width, rng)[:, 1])).sum()
    assert fast > 2 * slow


_CAPTION = re.compile(
    r"^a (?P<color>\w+) (?P<shape>\w+) (?P<motion>.+) on a (?P<background>\w+) background$")


def test_caption_describes_the_scene():
    rng = np.random.default_rng(1)
    speed_words = {"slow": "slowly", "fast": "quickly"}
    for _ in range(200):
        scene = render.sample_scene(rng, 8, 32, 32)
        match = _CAPTION.match(render.caption(scene))
        assert match, render.caption(scene)
        assert match["color"] == scene.object_color != scene.background_color == match["background"]
        assert match["shape"] == scene.shape
        words = match["motion"]
        if scene.motion == "still":
            assert words == "standing still"
        else:
            assert speed_words[scene.speed] in words.split()
            direction = {"clockwise": " clockwise", "counterclockwise": "counterclockwise",
                         "bouncing": "bouncing", "left": "left", "right": "right",
                         "up": " up", "down": "down"}[scene.motion]
            assert direction in words
    still = render.sample_scene(rng, 1, 32, 32, still=True)
    assert render.caption(still, include_motion=False) == (
        f"a {still.object_color} {still.shape} on a {still.background_color} background")
