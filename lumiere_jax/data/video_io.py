"""Video files <-> uint8 frames with PyAV (no ffmpeg binary needed). Writes are atomic.

Paths may be local or object-store URIs (`gs://...`): PyAV works on local files, so a URI is read from a
temporary download and written as a local temporary file uploaded once complete (lumiere_jax/storage.py).
"""

from __future__ import annotations

import fractions
import os

import av
import numpy as np

from lumiere_jax import storage


class VideoReadError(RuntimeError):
    """A video file could not be opened or decoded."""


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decodes every frame of the first video stream: (frames uint8 [T, H, W, 3], fps)."""
    try:
        with storage.local_file(path, os.path.splitext(os.fspath(path))[1]) as local, av.open(local) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.base_rate or stream.guessed_rate
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise VideoReadError(f"{path}: cannot decode video ({error})") from error
    if not frames:
        raise VideoReadError(f"{path}: the video stream has no frames")
    if not rate:
        raise VideoReadError(f"{path}: the video stream has no frame rate")
    return np.stack(frames), float(rate)


def _check_frames(frames: np.ndarray, fps: float) -> None:
    if not fps > 0:
        raise ValueError(f"fps={fps} must be positive")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}; "
            "convert [-1, 1] floats with ((x + 1) * 127.5).round().clip(0, 255).astype(np.uint8)")


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float, crf: int = 18) -> None:
    """Encodes frames uint8 [T, H, W, 3] as H.264 mp4 (yuv420p: odd sizes are padded by one pixel)."""
    _check_frames(frames, fps)
    # yuv420p needs even height and width; pad by edge replication rather than crop.
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with storage.atomic_local_file(path, ".mp4") as temporary:
        with av.open(temporary, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fractions.Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())


def write_gif(path: str | os.PathLike, frames: np.ndarray, fps: float) -> None:
    """Encodes frames uint8 [T, H, W, 3] as an animated GIF (fixed 3-3-2 bit palette: previews only)."""
    _check_frames(frames, fps)
    with storage.atomic_local_file(path, ".gif") as temporary:
        with av.open(temporary, mode="w", format="gif") as container:
            stream = container.add_stream("gif", rate=fractions.Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "rgb8"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
