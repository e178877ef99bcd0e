"""Metrics of the evaluation job: each maps generated videos (+ their prompts) to named scalars.

A metric has a `name` and `compute(videos, prompts) -> {scalar name: float}`; videos are uint8
`[T, H, W, 3]`, possibly a lazy sequence (memory-mapped files): metrics read them `CHUNK` at a time.
FVD and IS score `clip_frames` frames taken every `frame_stride` frames from the start of each video (the
published protocols use 16-frame clips; which 16 of a longer video is our choice).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

import gin
import numpy as np

from lumiere_jax.evaluate import frechet
from lumiere_jax.evaluate import inception_score
from lumiere_jax.evaluate import networks
from lumiere_jax.evaluate import synthetic_quality


CHUNK = 256


def chunks(videos: Iterable[np.ndarray], size: int = CHUNK) -> Iterator[list[np.ndarray]]:
    """Consecutive lists of at most `size` videos (each loaded into memory only for its chunk)."""
    iterator = iter(videos)
    while chunk := [np.asarray(video) for video in itertools.islice(iterator, size)]:
        yield chunk


class Metric(Protocol):
    name: str

    def compute(self, videos: Sequence[np.ndarray], prompts: Sequence[str]) -> dict[str, float]:
        ...


def take_clip(video: np.ndarray, clip_frames: int, frame_stride: int = 1) -> np.ndarray:
    """The first `clip_frames` frames at `frame_stride` of `video: [T, H, W, 3]`."""
    needed = (clip_frames - 1) * frame_stride + 1
    if video.shape[0] < needed:
        raise ValueError(f"a {video.shape[0]}-frame video is too short for {clip_frames} frames at stride "
                         f"{frame_stride} ({needed} needed); lower clip_frames or frame_stride")
    return video[:needed:frame_stride]


@gin.configurable
class SyntheticQuality:
    """The synthetic_motion attribute / temporal-consistency scores (synthetic_quality.score_videos)."""

    name = "synthetic"

    def compute(self, videos: Sequence[np.ndarray], prompts: Sequence[str]) -> dict[str, float]:
        result = synthetic_quality.score_videos(list(videos), list(prompts))
        return {f"synthetic/{key}": value for key, value in result["metrics"].items() if value is not None}


@gin.configurable
class FVD:
    """Fréchet Video Distance: I3D logits of generated clips against reference statistics (an .npz with
    mu, sigma, count; `ucf101.reference_statistics` writes them from real videos)."""

    name = "fvd"

    def __init__(self, i3d_weights: str = gin.REQUIRED, reference_stats: str = gin.REQUIRED,
                 clip_frames: int = 16, frame_stride: int = 1, batch_size: int = 8,
                 features: Callable[[Sequence[np.ndarray]], np.ndarray] | None = None):
        self.features = features or networks.I3DFeatures.from_file(i3d_weights, batch_size=batch_size)
        self.reference_stats = reference_stats
        self.clip_frames, self.frame_stride = clip_frames, frame_stride

    def statistics(self, videos: Iterable[np.ndarray]) -> frechet.GaussianStats:
        """Feature statistics of `videos`, streamed (also used for the real reference set)."""
        stats = None
        for chunk in chunks(videos):
            features = self.features([take_clip(video, self.clip_frames, self.frame_stride) for video in chunk])
            stats = stats or frechet.GaussianStats(features.shape[1])
            stats.update(features)
        return stats

    def compute(self, videos: Sequence[np.ndarray], prompts: Sequence[str]) -> dict[str, float]:
        mu_real, sigma_real, _ = frechet.load_stats(self.reference_stats)
        mu, sigma = self.statistics(videos).mean_and_covariance()
        return {"fvd": frechet.frechet_distance(mu, sigma, mu_real, sigma_real)}


@gin.configurable
class InceptionScore:
    """Video Inception Score from the UCF101 C3D classifier's logits."""

    name = "inception_score"

    def __init__(self, c3d_weights: str = gin.REQUIRED, num_splits: int = 10, clip_frames: int = 16,
                 frame_stride: int = 1, batch_size: int = 8,
                 logits: Callable[[Sequence[np.ndarray]], np.ndarray] | None = None):
        self.logits = logits or networks.C3DLogits.from_file(c3d_weights, batch_size=batch_size)
        self.num_splits, self.clip_frames, self.frame_stride = num_splits, clip_frames, frame_stride

    def compute(self, videos: Sequence[np.ndarray], prompts: Sequence[str]) -> dict[str, float]:
        logits = np.concatenate([self.logits([take_clip(video, self.clip_frames, self.frame_stride) for video in chunk])
                                 for chunk in chunks(videos)])
        mean, std = inception_score.inception_score(logits, min(self.num_splits, len(videos)))
        return {"is": mean, "is_std": std}


@gin.configurable
class CLIPSim:
    """Text-video alignment: mean over videos of the per-frame CLIP cosine similarity with the prompt."""

    name = "clipsim"

    def __init__(self, clip_weights: str = gin.REQUIRED, vocab: str = gin.REQUIRED, merges: str = gin.REQUIRED,
                 batch_size: int = 4,
                 similarity: Callable[[Sequence[np.ndarray], Sequence[str]], np.ndarray] | None = None):
        self.similarity = similarity or networks.CLIPSimilarity.from_files(clip_weights, vocab, merges, batch_size)

    def compute(self, videos: Sequence[np.ndarray], prompts: Sequence[str]) -> dict[str, float]:
        scores = [self.similarity(chunk, prompts[start:start + len(chunk)])
                  for start, chunk in zip(itertools.count(0, CHUNK), chunks(videos))]
        return {"clipsim": float(np.mean(np.concatenate(scores)))}
