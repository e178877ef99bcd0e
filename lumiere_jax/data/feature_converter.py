"""Task features -> model batch features (docs/ARCHITECTURE.md "Batches").

seqio's stock converters keep only rank-1 token features and drop video arrays; this one keeps the
pixels, pads the caption tokens to a fixed length and adds the text mask:
  task:  {"video": float32 [T, H, W, 3] (or "image": [H, W, 3]), "text_tokens": int32 [<= L]}
  model: {"video" | "image", "text_tokens": int32 [L], "text_mask": bool [L]}
         plus, when `conditional`, {"condition": float32 [T, H, W, 3], "condition_mask": float32 [T, H, W, 1]}
         (computed upstream, see masks.py and pipeline.py).
Tasks over a text cache (text_cache.py) also yield `text_embeddings: float32 [<= L, D]`; they are padded
with zeros to `[L, D]` like the tokens, whether or not the converter was built with `text_embeddings=True`.
"""

from __future__ import annotations

from collections.abc import Mapping

import seqio
import tensorflow as tf

_Spec = seqio.FeatureConverter.FeatureSpec
TEXT_EMBEDDINGS = "text_embeddings"


class VideoFeatureConverter(seqio.FeatureConverter):
    """Pads text to `task_feature_lengths["text_tokens"]`; checks pixel shapes; never packs.

    `task_feature_lengths` holds "text_tokens" and the pixel key; the pixel length is the number of
    frames for video (seqio checks it on dimension 0) and the height for images.
    """

    TASK_FEATURES = {}
    MODEL_FEATURES = {}
    PACKING_FEATURE_DTYPES = {}

    def __init__(self, modality: str = "video", conditional: bool = False, text_embeddings: bool = False):
        if modality not in ("video", "image"):
            raise ValueError(f"modality={modality!r} must be 'video' or 'image'")
        if conditional and modality != "video":
            raise ValueError("condition masks need video examples; use modality='video'")
        self.modality = modality
        self.conditional = conditional
        self.text_embeddings = text_embeddings
        pixel_rank = 4 if modality == "video" else 3
        self.TASK_FEATURES = {
            modality: _Spec(dtype=tf.float32, rank=pixel_rank),
            "text_tokens": _Spec(dtype=tf.int32),
        }
        self.MODEL_FEATURES = {
            modality: _Spec(dtype=tf.float32, rank=pixel_rank),
            "text_tokens": _Spec(dtype=tf.int32),
            "text_mask": _Spec(dtype=tf.bool),
        }
        extra_features = {}
        if conditional:
            extra_features.update(
                condition=_Spec(dtype=tf.float32, rank=4), condition_mask=_Spec(dtype=tf.float32, rank=4))
        if text_embeddings:
            extra_features[TEXT_EMBEDDINGS] = _Spec(dtype=tf.float32, rank=2)
        self.TASK_FEATURES.update(extra_features)
        self.MODEL_FEATURES.update(extra_features)
        super().__init__(pack=False)

    def __call__(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        """Converts `ds`; a dataset holding cached `text_embeddings` goes through a converter that keeps them."""
        if TEXT_EMBEDDINGS in ds.element_spec and not self.text_embeddings:
            converter = VideoFeatureConverter(self.modality, self.conditional, text_embeddings=True)
            lengths = {**task_feature_lengths, TEXT_EMBEDDINGS: task_feature_lengths["text_tokens"]}
            return converter(ds, lengths)
        return super().__call__(ds, task_feature_lengths)

    def task_feature_lengths(self, text_length: int, pixel_length: int) -> dict[str, int]:
        """The lengths mapping this converter expects (pixel_length: frames, or image height)."""
        lengths = {self.modality: pixel_length, "text_tokens": text_length}
        if self.conditional:
            lengths.update(condition=pixel_length, condition_mask=pixel_length)
        if self.text_embeddings:
            lengths[TEXT_EMBEDDINGS] = text_length
        return lengths

    def _convert_features(
        self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int],
    ) -> tf.data.Dataset:
        text_length = task_feature_lengths["text_tokens"]
        text_keys = ("text_tokens", "text_mask", TEXT_EMBEDDINGS)
        pixel_keys = [key for key in self.MODEL_FEATURES if key not in text_keys]

        def convert(example):
            tokens = example["text_tokens"][:text_length]
            num_tokens = tf.shape(tokens)[0]
            padded = tf.pad(tokens, [[0, text_length - num_tokens]])
            features = {key: example[key] for key in pixel_keys}
            features["text_tokens"] = tf.ensure_shape(padded, [text_length])
            features["text_mask"] = tf.range(text_length) < num_tokens
            if self.text_embeddings:
                embeddings = example[TEXT_EMBEDDINGS][:text_length]  # [num_tokens, D]
                rows_match = tf.debugging.assert_equal(
                    tf.shape(embeddings)[0], num_tokens,
                    message="cached text_embeddings and text_tokens disagree on the token count")
                with tf.control_dependencies([rows_match]):
                    embeddings = tf.pad(embeddings, [[0, text_length - num_tokens], [0, 0]])
                features[TEXT_EMBEDDINGS] = tf.ensure_shape(embeddings, [text_length, None])
            return features

        return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
        lengths = dict(task_feature_lengths)
        lengths["text_mask"] = task_feature_lengths["text_tokens"]
        return lengths
