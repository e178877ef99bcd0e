"""How well generated clips keep the content they were given (PAPER.md 4.2): image-to-video must start on
the given image, a cinemagraph must keep everything outside its animated region still and equal to the image.

Errors are mean absolute differences of pixels in [-1, 1]. Generated frames larger than the given image (an
SSR output) are area-averaged down to the image's size first, so the check reads what the base model was
asked to keep.
"""

from __future__ import annotations

import numpy as np


def area_resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """`frames: [T, H, W, C]` -> `[T, height, width, C]` by averaging pixel blocks; H, W multiples of the target."""
    num_frames, source_height, source_width, channels = frames.shape
    if source_height % height or source_width % width:
        raise ValueError(f"frames of {source_height}x{source_width} cannot be area-averaged to {height}x{width}; "
                         "compare at a size that divides the generated frames")
    blocks = frames.reshape(num_frames, height, source_height // height, width, source_width // width, channels)
    return blocks.mean(axis=(2, 4))


def _at_image_size(video: np.ndarray, image: np.ndarray) -> np.ndarray:
    return area_resize(np.asarray(video, np.float64), *image.shape[:2])


def first_frame_error(video: np.ndarray, image: np.ndarray) -> float:
    """Mean |video[0] - image| for `video: [T, H, W, 3]`, `image: [h, w, 3]`, both in [-1, 1]."""
    return float(np.mean(np.abs(_at_image_size(video, image)[0] - image)))


def static_region_error(video: np.ndarray, image: np.ndarray, region: np.ndarray) -> float:
    """Mean |video - image| over every frame's pixels outside `region: [h, w, 1]` (1 = animated)."""
    static = np.broadcast_to(1.0 - region, image.shape[:2] + (1,)).astype(np.float64)  # [h, w, 1]
    if not static.any():
        raise ValueError("the animated region covers the whole frame; a cinemagraph needs a static part")
    error = np.abs(_at_image_size(video, image) - image) * static  # [T, h, w, 3]
    return float(error.sum() / (static.sum() * image.shape[-1] * video.shape[0]))
