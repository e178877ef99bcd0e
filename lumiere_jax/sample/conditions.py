"""Condition inputs of the applications (PAPER.md 4): files -> model-sized arrays -> <C, M>.

The conditional model sees <J, C, M> on channels (paper 4.2); M = 1 marks known content:
  t2v:          C = 0, M = 0 everywhere (also what a conditional model gets for plain text-to-video).
  i2v:          C = the image then blank frames; M = 1 on the whole first frame, 0 elsewhere.
  inpaint:      C = the user's video; M = 0 inside the region to fill, 1 outside, on every frame.
  cinemagraph:  C = the image repeated over all frames; M = 1 on the whole first frame, later frames 1
                only outside the region to animate.
  extend:       C = the last k frames of a previous clip on the first k frames, blank after; M = 1 on those k
                frames (video extension; k = 1 is exactly the image-to-video task the model is trained on).
Arrays are channels last: `video: [T, H, W, 3]` float32 in [-1, 1], `region`/`mask: [T, H, W, 1]` float32.
Images and videos are scaled to cover the model's frame and centre-cropped (aspect kept, our choice). A
region (mask file) must have the pixel size of the image or video it belongs to; it is cropped the same way.
Condition files may be local or `gs://` (read through lumiere_jax/storage.py).
"""

from __future__ import annotations

import jax
import numpy as np

from lumiere_jax import storage
from lumiere_jax.condition_masks import condition_mask
from lumiere_jax.data import video_io


class ConditionError(ValueError):
    """A condition file is missing, unreadable, or does not fit the model (size, frame count)."""


def read_frames(path: str) -> np.ndarray:
    """Decodes an image or video file: uint8 `[T, H, W, 3]` (an image is one frame)."""
    if not storage.isfile(path):
        raise ConditionError(f"condition file {path!r} does not exist")
    try:
        frames, _ = video_io.read_video(path)
    except video_io.VideoReadError as error:
        raise ConditionError(f"cannot read condition file {path!r}: {error}; give an image (png, jpg) or a "
                             "video (mp4, ...) that PyAV can decode") from None
    return frames


def read_image(path: str) -> np.ndarray:
    """A single image: uint8 `[H, W, 3]`; a multi-frame video is an error."""
    frames = read_frames(path)
    if frames.shape[0] != 1:
        raise ConditionError(f"{path!r} has {frames.shape[0]} frames but an image is expected here; extract one "
                             "frame (e.g. the first) into a png")
    return frames[0]


def read_video(path: str, num_frames: int) -> np.ndarray:
    """A video of exactly `num_frames` frames: uint8 `[T, H, W, 3]`."""
    frames = read_frames(path)
    if frames.shape[0] != num_frames:
        raise ConditionError(f"{path!r} has {frames.shape[0]} frames but the model generates {num_frames}; trim or "
                             f"resample the video to {num_frames} frames")
    return frames


def to_unit_range(frames: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [-1, 1]."""
    return frames.astype(np.float32) / 127.5 - 1.0


def cover_crop(frames: np.ndarray, height: int, width: int, method: str = "linear") -> np.ndarray:
    """Scales `frames: [T, h, w, C]` so they cover `height x width`, then crops the centre. Float in, float out."""
    num_frames, source_height, source_width, channels = frames.shape
    scale = max(height / source_height, width / source_width)
    scaled_height = max(height, round(source_height * scale))
    scaled_width = max(width, round(source_width * scale))
    frames = np.asarray(frames, np.float32)
    if (scaled_height, scaled_width) != (source_height, source_width):
        frames = np.asarray(jax.image.resize(frames, (num_frames, scaled_height, scaled_width, channels), method,
                                             antialias=method != "nearest"))
    top, left = (scaled_height - height) // 2, (scaled_width - width) // 2
    return frames[:, top:top + height, left:left + width]


def fit_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 `[h, w, 3]` -> float32 `[H, W, 3]` in [-1, 1]."""
    return np.clip(cover_crop(to_unit_range(image)[None], height, width)[0], -1.0, 1.0)


def fit_video(video: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 `[T, h, w, 3]` -> float32 `[T, H, W, 3]` in [-1, 1]."""
    return np.clip(cover_crop(to_unit_range(video), height, width), -1.0, 1.0)


def read_region(path: str, source_shape: tuple[int, ...], num_frames: int, height: int, width: int) -> np.ndarray:
    """A region file (white = region) -> float32 `[T, H, W, 1]` in {0, 1}, cropped like its source.

    `source_shape`: `(h, w)` of the image or video the region belongs to; the file must match it. One
    frame applies to every frame; otherwise it needs `num_frames` frames.
    """
    frames = read_frames(path)
    if frames.shape[1:3] != tuple(source_shape):
        raise ConditionError(f"mask {path!r} is {frames.shape[2]}x{frames.shape[1]} (WxH) but its image/video is "
                             f"{source_shape[1]}x{source_shape[0]}; draw the mask at the size of the input")
    if frames.shape[0] not in (1, num_frames):
        raise ConditionError(f"mask {path!r} has {frames.shape[0]} frames; give one frame (applies to all) or "
                             f"{num_frames}")
    region = (frames.astype(np.float32).mean(axis=-1, keepdims=True) >= 127.5).astype(np.float32)
    region = (cover_crop(region, height, width, method="nearest") >= 0.5).astype(np.float32)
    return np.broadcast_to(region, (num_frames, height, width, 1)).copy()


def box_region(box: tuple[float, float, float, float], num_frames: int, height: int, width: int) -> np.ndarray:
    """Region from a box `(top, left, bottom, right)` in fractions of the frame: float32 `[T, H, W, 1]`.

    Pixel rows `round(top * H) .. round(bottom * H) - 1` are inside (at least one row and column).
    """
    top, left, bottom, right = box
    rows = (round(top * height), max(round(bottom * height), round(top * height) + 1))
    cols = (round(left * width), max(round(right * width), round(left * width) + 1))
    region = np.zeros((num_frames, height, width, 1), np.float32)
    region[:, rows[0]:rows[1], cols[0]:cols[1]] = 1.0
    return region


def text_to_video(num_frames: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Nothing known: `(C, M)` all zero."""
    return (np.zeros((num_frames, height, width, 3), np.float32), np.zeros((num_frames, height, width, 1), np.float32))


def _whole_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    return np.ones((num_frames, height, width, 1), np.float32)


def image_to_video(image: np.ndarray, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """`image: [H, W, 3]` -> C = image then blank frames, M = 1 on frame 0."""
    mask = condition_mask("image_to_video", _whole_frames(num_frames, *image.shape[:2]))
    condition = np.zeros((num_frames, *image.shape), np.float32)
    condition[0] = image
    return condition, mask


def video_extension(previous: np.ndarray, context_frames: int, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """`previous: [T0, H, W, 3]` -> C = its last `context_frames` frames, then blank; M = 1 on those frames
    (image-to-video with `context_frames` known frames)."""
    if not 1 <= context_frames < num_frames:
        raise ConditionError(f"context_frames={context_frames} must lie in [1, {num_frames - 1}] (the new clip has "
                             f"{num_frames} frames and must add at least one)")
    if previous.shape[0] < context_frames:
        raise ConditionError(f"the previous clip has {previous.shape[0]} frames, fewer than context_frames="
                             f"{context_frames}; give a longer clip or fewer context frames")
    mask = condition_mask("image_to_video", _whole_frames(num_frames, *previous.shape[1:3]),
                          context_frames=context_frames)
    condition = np.zeros((num_frames, *previous.shape[1:]), np.float32)
    condition[:context_frames] = previous[-context_frames:]
    return condition, mask


def inpainting(video: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`video: [T, H, W, 3]`, `region: [T, H, W, 1]` (1 = fill) -> C = video, M = 1 - region."""
    return np.asarray(video, np.float32), condition_mask("inpainting", region)


def cinemagraph(image: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`image: [H, W, 3]`, `region: [T, H, W, 1]` (1 = animate) -> C = image on every frame,
    M = 1 on frame 0 and outside the region on later frames."""
    num_frames = region.shape[0]
    condition = np.broadcast_to(image, (num_frames, *image.shape)).astype(np.float32)
    return condition, condition_mask("cinemagraph", region)
