"""Preprocessors: frame sampling, crop / resize, normalisation, tokenisation parity with vocab."""

import numpy as np
import pytest
import seqio
import tensorflow as tf

from lumiere_jax.data import preprocessors, tasks, vocab


def _indexed_videos(num, num_frames=20, size=8):
    """Frame t of video i has pixel value 10 * i + t (so frames identify themselves)."""
    values = 10 * np.arange(num)[:, None] + np.arange(num_frames)[None]
    videos = np.broadcast_to(values[..., None, None, None], (num, num_frames, size, size, 3))
    return tf.data.Dataset.from_tensor_slices({"video": videos.astype(np.float32)})


def _run(build, seed):
    """Builds the dataset under seqio's seed manager (it fixes the seeds at construction)."""
    with seqio.utils.map_seed_manager(seed):
        return list(build().as_numpy_iterator())


def test_sample_frames_takes_strided_windows_deterministically():
    def sampled(seed):
        return _run(lambda: preprocessors.sample_frames(
            _indexed_videos(6), num_frames=4, frame_stride=3), seed)
    first, again, other = sampled(1), sampled(1), sampled(2)
    starts = []
    for index, example in enumerate(first):
        values = example["video"][:, 0, 0, 0] - 10 * index
        assert example["video"].shape == (4, 8, 8, 3)
        np.testing.assert_array_equal(np.diff(values), 3)
        assert 0 <= values[0] and values[-1] <= 19
        starts.append(values[0])
    assert len(set(starts)) > 1  # the start is random per example
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["video"], b["video"])
    assert any(not np.array_equal(a["video"], b["video"]) for a, b in zip(first, other))


def test_sample_frames_rejects_short_clips():
    with pytest.raises(tf.errors.InvalidArgumentError, match="clip too short"):
        _run(lambda: preprocessors.sample_frames(
            _indexed_videos(1, num_frames=5), num_frames=4, frame_stride=2), 0)


def test_random_crop_resize():
    ramp = np.broadcast_to(np.arange(32, dtype=np.float32)[None, None, :, None], (3, 16, 32, 3))
    dataset = tf.data.Dataset.from_tensors({"video": ramp})
    # Full-height crop of a square from a 16x32 frame, at a random horizontal offset, no scaling.
    (out,) = _run(lambda: preprocessors.random_crop_resize(dataset, 16, 16), 0)
    video = out["video"]
    assert video.shape == (3, 16, 16, 3)
    offset = video[0, 0, 0, 0]
    np.testing.assert_allclose(video[:, :, :, 0], np.broadcast_to(offset + np.arange(16), (3, 16, 16)))
    (zoomed,) = _run(lambda: preprocessors.random_crop_resize(dataset, 8, 8, min_scale=0.5), 3)
    assert zoomed["video"].shape == (3, 8, 8, 3)
    image = tf.data.Dataset.from_tensors({"image": ramp[0]})
    (resized,) = _run(lambda: preprocessors.random_crop_resize(image, 4, 4, key="image"), 0)
    assert resized["image"].shape == (4, 4, 3)


def test_normalize_and_still_video():
    dataset = tf.data.Dataset.from_tensors({"image": np.array([[[0, 255, 51]]], np.uint8)})
    (example,) = _run(lambda: preprocessors.image_to_still_video(
        preprocessors.normalize_pixels(dataset, "image"), 3), 0)
    np.testing.assert_allclose(example["video"], np.broadcast_to([-1.0, 1.0, -0.6], (3, 1, 1, 3)), atol=1e-6)


@pytest.mark.parametrize("max_length", [8, 64])
def test_tokenize_caption_matches_vocab_tokenize(max_length):
    vocabulary = seqio.ByteVocabulary()
    captions = ["a red circle moving slowly to the left on a blue background", "hi"]
    dataset = tf.data.Dataset.from_tensor_slices({"text_tokens": captions})
    features = tasks.output_features(vocabulary, "video")
    tokenized = _run(
        lambda: preprocessors.tokenize_caption(dataset, features, {"text_tokens": max_length}), 0)
    tokens, mask = vocab.tokenize(captions, vocabulary, max_length)
    for row, example in enumerate(tokenized):
        np.testing.assert_array_equal(example["text_tokens"], tokens[row][mask[row]])
