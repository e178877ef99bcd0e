"""PyAV round trips, clear decode errors and atomic writes."""

import os

import numpy as np
import pytest

from lumiere_jax.data import video_io


def _gradient_clip(num_frames=10, height=32, width=48) -> np.ndarray:
    """Smooth content that H.264 keeps nearly exactly; brightness encodes the frame index."""
    ys, xs = np.mgrid[:height, :width]
    frames = [np.stack([xs * 4 % 256, ys * 6 % 256, np.full_like(xs, 20 * t)], axis=-1)
              for t in range(num_frames)]
    return np.asarray(frames, np.uint8)


def test_mp4_round_trip(tmp_path):
    frames = _gradient_clip()
    path = tmp_path / "clip.mp4"
    video_io.write_mp4(path, frames, fps=12)
    decoded, fps = video_io.read_video(path)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert fps == pytest.approx(12.0)
    assert np.abs(decoded.astype(int) - frames).mean() < 3.0
    np.testing.assert_allclose(decoded[..., 2].mean(axis=(1, 2)), 20 * np.arange(10), atol=4)
    assert os.listdir(tmp_path) == ["clip.mp4"]  # no temporary file left behind


def test_odd_sizes_are_padded_and_gif_round_trip(tmp_path):
    frames = _gradient_clip(height=31, width=45)
    video_io.write_mp4(tmp_path / "odd.mp4", frames, fps=8)
    decoded, _ = video_io.read_video(tmp_path / "odd.mp4")
    assert decoded.shape == (10, 32, 46, 3)
    assert np.abs(decoded[:, :31, :45].astype(int) - frames).mean() < 3.0
    video_io.write_gif(tmp_path / "clip.gif", frames, fps=10)
    decoded, fps = video_io.read_video(tmp_path / "clip.gif")
    assert decoded.shape == frames.shape and fps == pytest.approx(10.0)
    assert np.abs(decoded.astype(int) - frames).mean() < 20.0  # fixed 3-3-2 bit palette


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"previous")
    with pytest.raises(ValueError, match="uint8"):
        video_io.write_mp4(path, _gradient_clip().astype(np.float32), fps=8)
    with pytest.raises(ValueError, match="fps"):
        video_io.write_mp4(path, _gradient_clip(), fps=0)

    def fail_mid_encoding(*args, **kwargs):
        raise RuntimeError("encoder crashed")
    monkeypatch.setattr(video_io.av.VideoFrame, "from_ndarray", fail_mid_encoding)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        video_io.write_mp4(path, _gradient_clip(), fps=8)
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["clip.mp4"]


def test_unreadable_files_raise_video_read_error(tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(2048))
    with pytest.raises(video_io.VideoReadError, match="corrupt.mp4"):
        video_io.read_video(corrupt)
    with pytest.raises(video_io.VideoReadError, match="missing.mp4"):
        video_io.read_video(tmp_path / "missing.mp4")
