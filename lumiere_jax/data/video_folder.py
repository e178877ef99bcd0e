"""`video_folder`: a tfds builder for your own captioned videos.

Manual directory layout (pass it as `DownloadConfig(manual_dir=...)`):
    my_videos/
      captions.csv     # header `path,caption`  (or captions.jsonl: {"path": ..., "caption": ...} per line)
      clip001.mp4      # paths are relative to the manual directory
      ...
Each video is decoded with PyAV, resampled to `fps` (nearest earlier frame), resized so that it covers
`height x width` and centre-cropped, then cut into clips of `num_frames` frames every `clip_stride`
frames. Unreadable videos, rows without a caption and videos shorter than one clip are skipped and
counted (`builder.skipped`); the build fails only if nothing is left.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from lumiere_jax.data import video_io

CAPTION_FILES = ("captions.jsonl", "captions.csv")


class ClipTooShortError(ValueError):
    """A video has fewer frames (after resampling) than one clip needs."""


@dataclasses.dataclass(eq=False)
class VideoFolderConfig(tfds.core.BuilderConfig):
    """Target clip geometry; `clip_stride` frames between clip starts (default: no overlap)."""

    num_frames: int = 16
    fps: float = 8.0
    height: int = 32
    width: int = 32
    clip_stride: int | None = None
    max_clips_per_video: int | None = None


def load_captions(manual_dir: str) -> list[tuple[str, str]]:
    """Reads (relative path, caption) rows from captions.jsonl or captions.csv in `manual_dir`."""
    for name in CAPTION_FILES:
        captions_path = os.path.join(manual_dir, name)
        if os.path.exists(captions_path):
            break
    else:
        raise FileNotFoundError(
            f"{manual_dir} has no {' or '.join(CAPTION_FILES)}; add a captions file with one "
            "(path, caption) row per video, paths relative to that folder")
    with open(captions_path, newline="", encoding="utf-8") as handle:
        if name.endswith(".jsonl"):
            rows = [json.loads(line) for line in handle if line.strip()]
        else:
            rows = list(csv.DictReader(handle))
    for number, row in enumerate(rows, start=1):
        if "path" not in row or "caption" not in row:
            raise ValueError(
                f"{captions_path} row {number} has fields {sorted(row)}; each row needs 'path' and "
                "'caption' (a CSV needs the header line `path,caption`)")
    return [(row["path"], (row["caption"] or "").strip()) for row in rows]


def resample_frames(frames: np.ndarray, source_fps: float, target_fps: float) -> np.ndarray:
    """Picks, for each target time k / target_fps, the latest source frame shown at that time."""
    duration = frames.shape[0] / source_fps
    num_target = int(np.floor(duration * target_fps + 1e-6))
    indices = np.floor(np.arange(num_target) * source_fps / target_fps + 1e-6).astype(np.int64)
    return frames[np.minimum(indices, frames.shape[0] - 1)]


def resize_and_center_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """frames uint8 [T, h, w, 3] -> uint8 [T, height, width, 3]: cover the target, then centre-crop."""
    source_h, source_w = frames.shape[1:3]
    scale = max(height / source_h, width / source_w)
    resized_h = max(height, round(source_h * scale))
    resized_w = max(width, round(source_w * scale))
    resized = tf.image.resize(
        tf.convert_to_tensor(frames, tf.float32), (resized_h, resized_w), antialias=True).numpy()
    top, left = (resized_h - height) // 2, (resized_w - width) // 2
    cropped = resized[:, top:top + height, left:left + width]
    return np.clip(np.round(cropped), 0, 255).astype(np.uint8)


def cut_clips(frames: np.ndarray, num_frames: int, stride: int) -> list[tuple[int, np.ndarray]]:
    """(start frame, clip [num_frames, ...]) for every start 0, stride, ... that fits."""
    if frames.shape[0] < num_frames:
        raise ClipTooShortError(
            f"{frames.shape[0]} frames after resampling, but a clip needs {num_frames}; "
            "lower num_frames or fps, or drop this video")
    starts = range(0, frames.shape[0] - num_frames + 1, stride)
    return [(start, frames[start:start + num_frames]) for start in starts]


def video_to_clips(path: str, config: VideoFolderConfig) -> list[tuple[int, np.ndarray]]:
    """Decodes, resamples, resizes and cuts one file. Raises VideoReadError / ClipTooShortError."""
    frames, source_fps = video_io.read_video(path)
    frames = resample_frames(frames, source_fps, config.fps)
    clips = cut_clips(frames, config.num_frames, config.clip_stride or config.num_frames)
    clips = clips[:config.max_clips_per_video]
    return [(start, resize_and_center_crop(clip, config.height, config.width)) for start, clip in clips]


class VideoFolder(tfds.core.GeneratorBasedBuilder):
    """Captioned clips cut from a folder of video files (see module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__
    BUILDER_CONFIGS = [
        VideoFolderConfig(name="tiny", description="16 frames of 32x32 at 8 fps"),
        VideoFolderConfig(
            name="base", description="80 frames of 128x128 at 16 fps",
            num_frames=80, fps=16.0, height=128, width=128),
    ]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.skipped: collections.Counter[str] = collections.Counter()

    def _info(self) -> tfds.core.DatasetInfo:
        config: VideoFolderConfig = self.builder_config
        shape = (config.num_frames, config.height, config.width, 3)
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "video": tfds.features.Video(shape=shape, encoding_format="png"),
                "caption": tfds.features.Text(),
                "source_path": tfds.features.Text(),
                "start_frame": tfds.features.Scalar(np.int32, doc="first frame, at the target fps"),
            }),
            metadata=tfds.core.MetadataDict(fps=config.fps),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(str(dl_manager.manual_dir))}

    def _generate_examples(self, manual_dir: str):
        config: VideoFolderConfig = self.builder_config
        num_clips = 0
        for relative_path, caption in load_captions(manual_dir):
            if not caption:
                self._skip("missing_caption", relative_path, "empty caption")
                continue
            path = os.path.join(manual_dir, relative_path)
            try:
                clips = video_to_clips(path, config)
            except video_io.VideoReadError as error:
                self._skip("unreadable", relative_path, str(error))
                continue
            except ClipTooShortError as error:
                self._skip("too_short", relative_path, str(error))
                continue
            for start, clip in clips:
                num_clips += 1
                yield f"{relative_path}#{start}", {
                    "video": clip, "caption": caption, "source_path": relative_path,
                    "start_frame": np.int32(start)}
        logging.info("video_folder: %d clips; skipped videos: %s", num_clips, dict(self.skipped))
        if not num_clips:
            raise ValueError(
                f"video_folder found no usable clip in {manual_dir} (skipped: {dict(self.skipped)}); "
                "check the captions file paths and the num_frames / fps settings")

    def _skip(self, reason: str, path: str, detail: str) -> None:
        self.skipped[reason] += 1
        logging.warning("video_folder: skipping %s (%s): %s", path, reason, detail)
