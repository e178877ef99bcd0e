"""Condition masks for conditional fine-tuning (PAPER.md 4.2): the model sees <J, C, M>.

`M` is float32 [T, H, W, 1] with 1 = known content and `C = video * M`. The mask kinds and their formula are
defined once, in lumiere_jax/condition_masks.py (image_to_video, inpainting, cinemagraph, unconditional); here
they are drawn at random for training examples.
Default rates (our choice; the paper is silent): the four kinds equally often, so a quarter of the
fine-tuning examples are unconditional.
During training C is the true clip times M for every kind (our choice); at sampling time a
cinemagraph's C is the still image repeated over frames, which agrees with M on every known pixel
only if the scene outside the box is static, which is what the user asks for.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from lumiere_jax.condition_masks import MASK_KINDS, condition_mask


@dataclasses.dataclass(frozen=True)
class MaskRates:
    """Relative sampling rates of the mask kinds and the box size range (fraction of H and W)."""

    image_to_video: float = 1.0
    inpainting: float = 1.0
    cinemagraph: float = 1.0
    unconditional: float = 1.0  # a quarter of the examples with the defaults (C = M = 0 at sampling)
    min_box_fraction: float = 0.25
    max_box_fraction: float = 0.75

    def __post_init__(self):
        rates = [getattr(self, kind) for kind in MASK_KINDS]
        if min(rates) < 0 or sum(rates) <= 0:
            raise ValueError(f"mask rates {dict(zip(MASK_KINDS, rates))} must be >= 0 with a positive sum")
        if not 0 < self.min_box_fraction <= self.max_box_fraction <= 1:
            raise ValueError(
                f"need 0 < min_box_fraction={self.min_box_fraction} <= max_box_fraction="
                f"{self.max_box_fraction} <= 1")


def box_mask(height: int, width: int, box: tf.Tensor) -> tf.Tensor:
    """float32 [H, W, 1]: 1 inside `box` = (top, left, bottom, right) in pixels (end exclusive)."""
    box = tf.cast(box, tf.int32)
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    inside = (rows >= box[0]) & (rows < box[2]) & (cols >= box[1]) & (cols < box[3])
    return tf.cast(inside, tf.float32)[..., None]


def kind_mask(kind: str, num_frames: int, height: int, width: int, box: tf.Tensor) -> tf.Tensor:
    """float32 [T, H, W, 1]: the mask of `kind` (condition_masks.py) with `box` as the region to fill."""
    region = tf.broadcast_to(box_mask(height, width, box)[None], [num_frames, height, width, 1])
    return condition_mask(kind, region, maximum=tf.maximum)


def random_box(seed: tf.Tensor, height: int, width: int, rates: MaskRates) -> tf.Tensor:
    """(top, left, bottom, right) int32 with sides in [min, max] fraction of H and W, inside the frame."""
    size_seed, position_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    fractions = tf.random.stateless_uniform(
        [2], size_seed, minval=rates.min_box_fraction, maxval=rates.max_box_fraction)
    frame_size = tf.constant([height, width], tf.float32)
    box_size = tf.clip_by_value(tf.cast(tf.round(fractions * frame_size), tf.int32), 1, [height, width])
    corner = tf.cast(
        tf.floor(tf.random.stateless_uniform([2], position_seed)
                 * tf.cast(tf.constant([height, width]) - box_size + 1, tf.float32)),
        tf.int32)
    return tf.concat([corner, corner + box_size], axis=0)


def sample_condition_mask(
    seed: tf.Tensor, num_frames: int, height: int, width: int, rates: MaskRates,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Draws a mask kind by `rates`: (mask float32 [T, H, W, 1], kind index int32 into MASK_KINDS)."""
    kind_seed, box_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    logits = tf.math.log([[getattr(rates, kind) for kind in MASK_KINDS]])
    kind = tf.cast(tf.random.stateless_categorical(logits, 1, kind_seed)[0, 0], tf.int32)
    box = random_box(box_seed, height, width, rates)
    candidates = tf.stack([kind_mask(kind, num_frames, height, width, box) for kind in MASK_KINDS])
    return candidates[kind], kind


def add_condition(video: tf.Tensor, seed: tf.Tensor, rates: MaskRates) -> dict[str, tf.Tensor]:
    """video float32 [T, H, W, 3] -> {"condition": video * M, "condition_mask": M}."""
    num_frames, height, width, _ = video.shape
    mask, _ = sample_condition_mask(seed, num_frames, height, width, rates)
    return {"condition": video * mask, "condition_mask": mask}
