"""The converter keeps pixels, pads text and adds its mask; seqio validates shapes and dtypes."""

import numpy as np
import pytest
import tensorflow as tf

from lumiere_jax.data.feature_converter import VideoFeatureConverter


def _dataset(token_lengths, conditional=False):
    def example(length):
        features = {
            "video": np.full((4, 6, 6, 3), length / 10, np.float32),
            "text_tokens": np.arange(3, 3 + length, dtype=np.int32),
            "caption": "dropped",
        }
        if conditional:
            features["condition"] = features["video"] * 0.5
            features["condition_mask"] = np.ones((4, 6, 6, 1), np.float32)
        return features
    examples = [example(length) for length in token_lengths]
    return tf.data.Dataset.from_generator(
        lambda: iter(examples),
        output_signature={key: tf.TensorSpec(
            [None] if key == "text_tokens" else np.shape(value),
            tf.string if key == "caption" else tf.as_dtype(np.asarray(value).dtype))
            for key, value in examples[0].items()})


def test_pads_text_and_builds_the_mask():
    converter = VideoFeatureConverter()
    out = list(converter(_dataset([2, 5]), converter.task_feature_lengths(5, 4)).as_numpy_iterator())
    assert set(out[0]) == {"video", "text_tokens", "text_mask"}
    np.testing.assert_array_equal(out[0]["text_tokens"], [3, 4, 0, 0, 0])
    np.testing.assert_array_equal(out[0]["text_mask"], [True, True, False, False, False])
    np.testing.assert_array_equal(out[1]["text_tokens"], [3, 4, 5, 6, 7])
    assert out[1]["text_mask"].all()
    np.testing.assert_allclose(out[1]["video"], 0.5)


def test_conditional_features_pass_through():
    converter = VideoFeatureConverter(conditional=True)
    (out,) = converter(_dataset([3], conditional=True), converter.task_feature_lengths(4, 4))
    assert set(out) == {"video", "text_tokens", "text_mask", "condition", "condition_mask"}
    assert out["condition_mask"].shape == (4, 6, 6, 1)


def test_wrong_lengths_and_modality_errors():
    converter = VideoFeatureConverter()
    with pytest.raises(Exception, match="text_tokens"):  # tasks trim text; longer means a bug upstream
        list(converter(_dataset([7]), converter.task_feature_lengths(5, 4)))
    with pytest.raises(Exception, match="video"):
        list(converter(_dataset([2]), converter.task_feature_lengths(4, 8)))
    with pytest.raises(ValueError, match="modality"):
        VideoFeatureConverter(modality="audio")
    with pytest.raises(ValueError, match="condition masks need video"):
        VideoFeatureConverter(modality="image", conditional=True)
