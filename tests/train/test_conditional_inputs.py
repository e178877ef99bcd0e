"""The shipped conditional fine-tuning config feeds the model masks that refer to the window it sees."""

import argparse

import gin
import jax
import numpy as np
import pytest

from lumiere_jax import gin_cli
from lumiere_jax.stages import factory as stages
from lumiere_jax.train import inputs


def parse_conditional_gin(data_dir, *bindings):
    """runs/finetune_conditional.gin + runs/cpu_tiny.gin (8-frame model, 16-frame clips) with `bindings`."""
    args = argparse.Namespace(
        gin_search_paths=[], gin_file=["runs/finetune_conditional.gin", "runs/cpu_tiny.gin"], gin_bindings=[],
        gin_overrides=[f"SyntheticMotionConfig.data_dir = {data_dir!r}", "MODEL_DIR = 'unused'",
                       "STUNET_CHECKPOINT = 'unused'", *bindings])
    gin_cli.parse_gin(args)


@pytest.fixture
def conditional_gin(synthetic_tiny_dir):
    """The shipped conditional config with image-to-video and cinemagraph masks only."""
    parse_conditional_gin(synthetic_tiny_dir,
                          "ConditionalInputs.mask_rates = {'inpainting': 0.0, 'unconditional': 0.0}")
    yield
    gin.clear_config()


def test_shipped_config_trains_a_share_of_unconditional_examples(synthetic_tiny_dir):
    """Text-to-video and SDEdit rows reach the conditional model with C = M = 0: a quarter of the fine-tuning
    examples are unconditional by default (data/masks.py)."""
    parse_conditional_gin(synthetic_tiny_dir)
    try:
        batch = next(inputs.seqio_iterator("train", 64, 0, 0, 1))
    finally:
        gin.clear_config()
    unconditional = batch["condition_mask"].reshape(64, -1).max(axis=1) == 0
    assert 8 <= unconditional.sum() <= 24  # 16 expected
    np.testing.assert_array_equal(batch["condition"][unconditional], 0.0)


def test_first_frame_and_static_region_stay_known_in_the_window(conditional_gin):
    adapter = stages.unet_adapter()
    iterator = inputs.seqio_iterator("train", 16, 0, 0, 1)
    model_inputs = []
    for index in range(2):
        batch = next(iterator)
        assert batch["video"].shape[1] == 8 and adapter.window_frames == 8  # tiny clips have 16 frames
        model_inputs.append(adapter.inputs_from_batch(
            {key: batch[key] for key in ("video", "condition", "condition_mask")}, jax.random.key(index)))
    x0 = np.concatenate([np.asarray(m.x0) for m in model_inputs])  # [32, 8, H, W, 3]
    channels = np.concatenate([np.asarray(m.channel_condition) for m in model_inputs])
    condition, mask = channels[..., :3], channels[..., 3:]
    # Image-to-video and cinemagraph: the window's first frame is known, whole.
    np.testing.assert_array_equal(mask[:, 0], 1.0)
    np.testing.assert_array_equal(condition[:, 0], x0[:, 0])
    cinemagraphs = mask[:, 1:].reshape(len(mask), -1).max(axis=1) > 0
    assert 0 < cinemagraphs.sum() < len(mask)  # both kinds drawn
    for example in np.flatnonzero(cinemagraphs):
        static = mask[example, 1]  # [H, W, 1]: known outside the region to animate, on every later frame
        assert 0 < static.mean() < 1
        np.testing.assert_array_equal(mask[example, 1:], np.broadcast_to(static, mask[example, 1:].shape))
        np.testing.assert_array_equal(condition[example], x0[example] * mask[example])
