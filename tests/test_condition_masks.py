"""The mask kinds of paper 4.2, defined once (lumiere_jax/condition_masks.py), against hand-written masks, and
built the same by NumPy, JAX and TensorFlow."""

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from lumiere_jax import condition_masks

T, H, W = 4, 3, 5
REGION = np.zeros((T, H, W, 1), np.float32)
REGION[:, 1:3, 2:4] = 1.0  # the pixels to generate


def _expected(kind: str, context_frames: int = 1) -> np.ndarray:
    """Each kind written out pixel by pixel."""
    mask = np.zeros((T, H, W, 1), np.float32)
    for t in range(T):
        for h in range(H):
            for w in range(W):
                inside = REGION[t, h, w, 0] == 1.0
                if kind == "image_to_video":
                    known = t < context_frames
                elif kind == "inpainting":
                    known = not inside
                elif kind == "cinemagraph":
                    known = t == 0 or not inside
                else:
                    known = False
                mask[t, h, w, 0] = float(known)
    return mask


@pytest.mark.parametrize("kind", condition_masks.MASK_KINDS)
def test_each_kind_matches_its_written_out_mask(kind):
    np.testing.assert_array_equal(condition_masks.condition_mask(kind, REGION), _expected(kind))


def test_video_extension_knows_its_context_frames():
    mask = condition_masks.condition_mask("image_to_video", np.ones_like(REGION), context_frames=2)
    np.testing.assert_array_equal(mask, _expected("image_to_video", context_frames=2))


@pytest.mark.parametrize("kind", condition_masks.MASK_KINDS)
def test_numpy_jax_and_tensorflow_build_the_same_mask(kind):
    by_numpy = condition_masks.condition_mask(kind, REGION)
    by_jax = condition_masks.condition_mask(kind, jnp.asarray(REGION), maximum=jnp.maximum)
    by_tf = condition_masks.condition_mask(kind, tf.constant(REGION), maximum=tf.maximum)
    np.testing.assert_array_equal(np.asarray(by_jax), by_numpy)
    np.testing.assert_array_equal(by_tf.numpy(), by_numpy)
    batched = condition_masks.condition_mask(kind, jnp.asarray(REGION)[None].repeat(2, 0), maximum=jnp.maximum)
    np.testing.assert_array_equal(np.asarray(batched), np.stack([by_numpy] * 2))


def test_unknown_kind_and_context_are_refused():
    with pytest.raises(ValueError, match="unknown mask kind 'outpainting'"):
        condition_masks.condition_mask("outpainting", REGION)
    with pytest.raises(ValueError, match="context_frames=5 must lie in"):
        condition_masks.condition_mask("image_to_video", REGION, context_frames=5)
