"""Condition masks against NumPy references (PAPER.md 4.2: M = 1 is known content, C = video * M)."""

import numpy as np
import pytest
import tensorflow as tf

from lumiere_jax.data import masks

T, H, W = 5, 12, 16


def _numpy_box(box):
    mask = np.zeros((H, W, 1), np.float32)
    mask[box[0]:box[2], box[1]:box[3]] = 1.0
    return mask


def test_mask_constructors_match_numpy():
    box = np.array([2, 3, 9, 11])
    inside = _numpy_box(box)
    np.testing.assert_array_equal(masks.box_mask(H, W, box).numpy(), inside)
    first = np.zeros((T, H, W, 1), np.float32)
    first[0] = 1.0
    np.testing.assert_array_equal(masks.kind_mask("image_to_video", T, H, W, box).numpy(), first)
    inpaint = np.broadcast_to(1.0 - inside, (T, H, W, 1))
    np.testing.assert_array_equal(masks.kind_mask("inpainting", T, H, W, box).numpy(), inpaint)
    cinemagraph = inpaint.copy()
    cinemagraph[0] = 1.0
    np.testing.assert_array_equal(masks.kind_mask("cinemagraph", T, H, W, box).numpy(), cinemagraph)
    np.testing.assert_array_equal(masks.kind_mask("unconditional", T, H, W, box).numpy(), np.zeros((T, H, W, 1)))


@pytest.mark.parametrize("kind", masks.MASK_KINDS)
def test_a_single_nonzero_rate_always_picks_that_kind(kind):
    rates = masks.MaskRates(**{name: float(name == kind) for name in masks.MASK_KINDS})
    for seed in range(5):
        mask, picked = masks.sample_condition_mask(tf.constant([seed, 1]), T, H, W, rates)
        assert masks.MASK_KINDS[int(picked)] == kind
        mask = mask.numpy()
        if kind == "image_to_video":
            assert mask[0].min() == 1.0 and mask[1:].max() == 0.0
        elif kind == "unconditional":
            assert mask.max() == 0
        else:
            hole = 1.0 - mask[-1, ..., 0]  # the box, read from the last frame
            rows, cols = np.nonzero(hole)
            box = [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]
            assert hole.sum() == (box[2] - box[0]) * (box[3] - box[1])  # a filled rectangle
            assert 0.25 * H - 1 <= box[2] - box[0] <= 0.75 * H + 1
            assert 0.25 * W - 1 <= box[3] - box[1] <= 0.75 * W + 1
            assert mask[0].min() == (1.0 if kind == "cinemagraph" else 0.0)


def test_kind_frequencies_follow_the_rates():
    rates = masks.MaskRates(image_to_video=2.0, inpainting=1.0, cinemagraph=1.0, unconditional=0.0)
    sample_kind = tf.function(lambda seed: masks.sample_condition_mask(seed, 2, 4, 4, rates)[1])
    kinds = [int(sample_kind(tf.constant([7, seed]))) for seed in range(400)]
    counts = np.bincount(kinds, minlength=4) / 400
    np.testing.assert_allclose(counts, [0.5, 0.25, 0.25, 0.0], atol=0.08)


def test_condition_is_video_times_mask_and_seeded():
    video = tf.random.stateless_uniform([T, H, W, 3], [0, 0], minval=-1, maxval=1)
    first = masks.add_condition(video, tf.constant([3, 4]), masks.MaskRates())
    again = masks.add_condition(video, tf.constant([3, 4]), masks.MaskRates())
    np.testing.assert_array_equal(first["condition_mask"], again["condition_mask"])
    np.testing.assert_allclose(first["condition"], video.numpy() * first["condition_mask"].numpy())
    assert first["condition_mask"].shape == (T, H, W, 1)


def test_invalid_rates_are_rejected():
    with pytest.raises(ValueError, match="positive sum"):
        masks.MaskRates(0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="min_box_fraction"):
        masks.MaskRates(min_box_fraction=0.9, max_box_fraction=0.5)
