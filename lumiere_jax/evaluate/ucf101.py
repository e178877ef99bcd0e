"""Zero-shot UCF101 text-to-video protocol (PAPER.md 5: the protocol of Blattmann et al. 2023, Ge et al. 2023).

From the published protocol: prompts are the 101 class names ("ApplyEyeMakeup" -> "apply eye makeup"),
10,000 generated videos, 16-frame clips, FVD with the Kinetics-400 I3D at 224 x 224 (bilinear resize, pixels
in [-1, 1]) against real UCF101 clips, IS with the UCF101 C3D on 112 x 112 centre crops of frames resized to
128 x 171. Our choices where the papers are not explicit: samples are spread over the classes in proportion
to the train split's class frequencies (largest-remainder rounding); each video contributes its first 16
frames; the real reference set is 10,000 shuffled train-split clips, each its first 16 frames; IS uses 10
splits. All are arguments. Real clips are read with tfds (`ucf101/<tfds_config>` prepared beforehand; nothing
is downloaded). Reference statistics:

    python -m lumiere_jax.evaluate.ucf101 --data_dir ~/tensorflow_datasets --i3d_weights i3d.safetensors \\
        --output ucf101_i3d_stats.npz
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator, Sequence

import gin
import numpy as np

from lumiere_jax.data import tasks
from lumiere_jax.evaluate import metrics as metrics_lib

NUM_SAMPLES = 10_000
CLIP_FRAMES = 16
DEFAULT_TFDS_CONFIG = "ucf101_1_256"


def _builder(data_dir: str | None, tfds_config: str):
    import tensorflow_datasets as tfds  # noqa: PLC0415 -- only this protocol needs tfds

    builder = tfds.builder(f"ucf101/{tfds_config}", data_dir=data_dir)
    if not builder.is_prepared():
        raise FileNotFoundError(f"UCF101 ({tfds_config}) is not prepared in {builder.data_dir}; build it first "
                                f"with `tfds build ucf101 --config {tfds_config} --data_dir DIR` (manual download)")
    return builder


def allocate_samples(class_counts: Sequence[int], num_samples: int) -> np.ndarray:
    """Samples per class proportional to `class_counts`, summing exactly to `num_samples` (largest remainder)."""
    counts = np.asarray(class_counts, np.float64)
    if counts.sum() <= 0:
        raise ValueError("class counts are all zero")
    exact = counts / counts.sum() * num_samples
    allocation = np.floor(exact).astype(np.int64)
    remainder_order = np.argsort(-(exact - allocation), kind="stable")
    allocation[remainder_order[:num_samples - allocation.sum()]] += 1
    return allocation


def class_prompts(class_names: Sequence[str], allocation: Sequence[int]) -> list[str]:
    """Each class's caption repeated by its allocation, in class order."""
    return [tasks.ucf101_caption(name) for name, count in zip(class_names, allocation) for _ in range(count)]


def train_class_counts(builder, split: str = "train") -> np.ndarray:
    """Number of clips per class in a split (labels only, videos not decoded)."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    dataset = builder.as_dataset(split=split, decoders={"video": tfds.decode.SkipDecoding()})
    labels = np.fromiter((int(example["label"]) for example in dataset.as_numpy_iterator()), np.int64)
    return np.bincount(labels, minlength=builder.info.features["label"].num_classes)


@gin.configurable
def ucf101_prompts(data_dir: str | None = None, num_samples: int = NUM_SAMPLES,
                   tfds_config: str = DEFAULT_TFDS_CONFIG, split: str = "train") -> list[str]:
    """The protocol's prompt list: class names, distributed like the `split` split."""
    builder = _builder(data_dir, tfds_config)
    names = builder.info.features["label"].names
    return class_prompts(names, allocate_samples(train_class_counts(builder, split), num_samples))


def clips_from_examples(examples: Iterable[dict], num_clips: int, clip_frames: int = CLIP_FRAMES
                        ) -> Iterator[np.ndarray]:
    """The first `clip_frames` frames of the first `num_clips` examples with that many frames: uint8 [T, H, W, 3]."""
    produced = 0
    for example in examples:
        if produced == num_clips:
            return
        video = np.asarray(example["video"])
        if video.shape[0] >= clip_frames:
            produced += 1
            yield video[:clip_frames].astype(np.uint8)


def real_clips(data_dir: str | None, num_clips: int = NUM_SAMPLES, split: str = "train",
               tfds_config: str = DEFAULT_TFDS_CONFIG, seed: int = 0) -> Iterator[np.ndarray]:
    """`num_clips` real 16-frame clips from a shuffled UCF101 split, streamed."""
    builder = _builder(data_dir, tfds_config)
    dataset = builder.as_dataset(split=split, shuffle_files=False).shuffle(20_000, seed=seed)
    return clips_from_examples(dataset.as_numpy_iterator(), num_clips)


def reference_statistics(fvd: metrics_lib.FVD, clips: Iterable[np.ndarray], output: str) -> int:
    """Writes the I3D feature statistics of real clips to `output` (.npz: mu, sigma, count); returns the count."""
    stats = fvd.statistics(clips)
    stats.save(output)
    return stats.count


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Writes UCF101 I3D reference statistics for FVD.")
    parser.add_argument("--data_dir", help="tfds data_dir holding the prepared ucf101")
    parser.add_argument("--tfds_config", default=DEFAULT_TFDS_CONFIG)
    parser.add_argument("--i3d_weights", required=True, help="converted I3D weights (convert.py)")
    parser.add_argument("--output", required=True, help=".npz to write")
    parser.add_argument("--num_videos", type=int, default=NUM_SAMPLES)
    parser.add_argument("--split", default="train")
    args = parser.parse_args(argv)
    fvd = metrics_lib.FVD(i3d_weights=args.i3d_weights, reference_stats=args.output)
    count = reference_statistics(fvd, real_clips(args.data_dir, args.num_videos, args.split, args.tfds_config),
                                 args.output)
    print(f"wrote statistics of {count} clips to {args.output}")


if __name__ == "__main__":
    main()
