"""The conditioning masks of paper 4.2, defined once for TensorFlow (training data), JAX (the trainer's default
condition) and NumPy (the sampling job).

The model sees <z, C, M>: `M` is 1 on known content, `C = content * M`. Every kind is one formula,

    M[t, h, w] = max(known_frame[t], 1 - fill_region[t, h, w]),

where `known_frame` marks whole frames given to the model and `fill_region` (1 = generate) marks the pixels
to make on the other frames:

  image_to_video: the first frame known (the first `context_frames` for video extension); the rest filled.
  inpainting:     no whole frame known; the region filled on every frame.
  cinemagraph:    the first frame known; later frames filled only inside the region (the part to animate).
  unconditional:  nothing known (C = M = 0: text-to-video and SDEdit rows of the conditional model).

The functions take the array library's `maximum` (`np.maximum`, `jnp.maximum`, `tf.maximum`) so each framework
builds the same masks with its own arrays; `known_frames` is a NumPy constant any of them accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

MASK_KINDS: tuple[str, ...] = ("image_to_video", "inpainting", "cinemagraph", "unconditional")
WHOLE_FRAME_KINDS: tuple[str, ...] = ("image_to_video", "unconditional")  # fill every pixel of unknown frames
_FIRST_FRAMES_KNOWN = ("image_to_video", "cinemagraph")


def known_frames(kind: str, num_frames: int, context_frames: int = 1) -> np.ndarray:
    """float32 `[T, 1, 1, 1]`: 1 on the frames `kind` gives whole (the first `context_frames` or none)."""
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; choose one of {MASK_KINDS}")
    if not 1 <= context_frames <= num_frames:
        raise ValueError(f"context_frames={context_frames} must lie in [1, num_frames={num_frames}]")
    known = np.zeros((num_frames, 1, 1, 1), np.float32)
    if kind in _FIRST_FRAMES_KNOWN:
        known[:context_frames] = 1.0
    return known


def condition_mask(kind: str, fill_region: Any, maximum: Callable[[Any, Any], Any] = np.maximum,
                   context_frames: int = 1) -> Any:
    """M `[..., T, H, W, 1]` of `kind` from `fill_region` (`[..., T, H, W, 1]`, 1 = generate).

    The whole-frame kinds (image_to_video, unconditional) ignore the region's content: pass ones of the
    frame's shape (`fill_region * 0 + 1` keeps the caller's array type and shape).
    """
    num_frames = fill_region.shape[-4]
    frames = known_frames(kind, num_frames, context_frames)
    if kind in WHOLE_FRAME_KINDS:
        fill_region = fill_region * 0.0 + 1.0
    return maximum(frames, 1.0 - fill_region)
