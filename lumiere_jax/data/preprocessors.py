"""seqio preprocessors: frame sampling, crop / resize, normalisation and caption tokenisation.

Random preprocessors take seqio's per-example seeds (`seqio.map_over_dataset(num_seeds=...)`) and use
stateless TF random ops, so a pipeline built with the same seed yields the same examples.
Videos are `[T, H, W, 3]`, images `[H, W, 3]`; pixel values go from uint8 to float32 in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Mapping

import seqio
import tensorflow as tf


def rename_features(dataset: tf.data.Dataset, mapping: Mapping[str, str]) -> tf.data.Dataset:
    """Keeps only the features named in `mapping` (old -> new name)."""
    return dataset.map(
        lambda example: {new: example[old] for old, new in mapping.items()},
        num_parallel_calls=tf.data.AUTOTUNE)


def _random_start(seed: tf.Tensor, available: tf.Tensor, needed: int) -> tf.Tensor:
    return tf.random.stateless_uniform(
        [], seed, minval=0, maxval=available - needed + 1, dtype=tf.int32)


@seqio.map_over_dataset(num_seeds=1)
def _sample_frames(example, seed, num_frames: int, frame_stride: int):
    video = example["video"]  # [T, H, W, 3]
    span = (num_frames - 1) * frame_stride + 1
    available = tf.shape(video)[0]
    long_enough = tf.debugging.assert_greater_equal(
        available, span,
        message=f"clip too short: {num_frames} frames at stride {frame_stride} need {span} frames")
    with tf.control_dependencies([long_enough]):  # check before drawing from an empty range
        start = _random_start(seed, available, span)
    frames = video[start:start + span:frame_stride]
    return {**example, "video": tf.ensure_shape(frames, [num_frames, None, None, 3])}


def sample_frames(dataset: tf.data.Dataset, num_frames: int, frame_stride: int = 1) -> tf.data.Dataset:
    """Random temporal crop: `num_frames` frames, `frame_stride` apart, from a longer clip."""
    return _sample_frames(dataset, num_frames=num_frames, frame_stride=frame_stride)


def _crop_and_resize(frames: tf.Tensor, seed: tf.Tensor, height: int, width: int,
                     min_scale: float) -> tf.Tensor:
    """frames [N, h, w, 3] -> [N, height, width, 3]: one random crop of the target aspect ratio
    (side `scale` in [min_scale, 1] of the largest such crop) for all frames, then resize."""
    source_h = tf.cast(tf.shape(frames)[1], tf.float32)
    source_w = tf.cast(tf.shape(frames)[2], tf.float32)
    largest = tf.minimum(source_h / height, source_w / width)
    scale = tf.random.stateless_uniform([], seed, minval=min_scale, maxval=1.0)
    crop_h = tf.maximum(1, tf.cast(tf.round(largest * scale * height), tf.int32))
    crop_w = tf.maximum(1, tf.cast(tf.round(largest * scale * width), tf.int32))
    offset_seeds = tf.random.experimental.stateless_split(seed, 2)
    top = _random_start(offset_seeds[0], tf.shape(frames)[1], crop_h)
    left = _random_start(offset_seeds[1], tf.shape(frames)[2], crop_w)
    crop = frames[:, top:top + crop_h, left:left + crop_w]
    resized = tf.image.resize(tf.cast(crop, tf.float32), (height, width), antialias=True)
    return tf.ensure_shape(resized, [None, height, width, 3])


@seqio.map_over_dataset(num_seeds=1)
def _random_crop_resize(example, seed, key: str, height: int, width: int, min_scale: float):
    pixels = example[key]
    frames = pixels if key == "video" else pixels[None]
    resized = _crop_and_resize(frames, seed, height, width, min_scale)
    return {**example, key: resized if key == "video" else resized[0]}


def random_crop_resize(
    dataset: tf.data.Dataset, height: int, width: int, key: str = "video", min_scale: float = 1.0,
) -> tf.data.Dataset:
    """Random crop (same for every frame) of the target aspect ratio, resized to height x width.

    `min_scale=1.0` is a deterministic centre-covering crop at a random offset along the longer side;
    smaller values zoom in. Output is float32 in the input's value range.
    """
    return _random_crop_resize(dataset, key=key, height=height, width=width, min_scale=min_scale)


def normalize_pixels(dataset: tf.data.Dataset, key: str = "video") -> tf.data.Dataset:
    """uint8 (or float in [0, 255]) -> float32 in [-1, 1]."""
    def normalize(example):
        return {**example, key: tf.cast(example[key], tf.float32) / 127.5 - 1.0}
    return dataset.map(normalize, num_parallel_calls=tf.data.AUTOTUNE)


def image_to_still_video(dataset: tf.data.Dataset, num_frames: int) -> tf.data.Dataset:
    """Repeats `image` [H, W, 3] into a still `video` [num_frames, H, W, 3] (joint image/video
    training through the video model; our choice, see tasks.py)."""
    def tile(example):
        example = dict(example)
        image = example.pop("image")
        return {**example, "video": tf.repeat(image[None], num_frames, axis=0)}
    return dataset.map(tile, num_parallel_calls=tf.data.AUTOTUNE)


def tokenize_caption(
    dataset: tf.data.Dataset,
    output_features: Mapping[str, seqio.Feature],
    sequence_length: Mapping[str, int] | None,
    key: str = "text_tokens",
) -> tf.data.Dataset:
    """Caption string -> int32 ids + EOS, truncated to the length with EOS kept (as vocab.tokenize)."""
    vocabulary = output_features[key].vocabulary
    max_length = (sequence_length or {}).get(key)

    def tokenize(example):
        ids = tf.cast(vocabulary.encode_tf(example[key]), tf.int32)
        if max_length is not None:
            ids = ids[:max_length - 1]
        ids = tf.concat([ids, [vocabulary.eos_id]], axis=0)
        return {**example, key: ids}
    return dataset.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)
