"""How batches become model inputs for each stage, against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toy
from lumiere_jax.stages import adapter as adapter_lib
from lumiere_jax.stages.adapter import area_downsample

VIDEO = np.random.default_rng(0).uniform(-1, 1, (2, 6, 8, 8, 3)).astype(np.float32)


def test_area_downsample_matches_block_means():
    expected = VIDEO.reshape(2, 6, 4, 2, 4, 2, 3).mean(axis=(3, 5))
    np.testing.assert_allclose(area_downsample(jnp.asarray(VIDEO), 4), expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="cannot be area-downsampled to 3x3"):
        area_downsample(jnp.asarray(VIDEO), 3)


def test_image_stage_takes_one_frame_per_clip():
    adapter = toy.toy_adapter(stage="t2i")
    inputs = adapter.inputs_from_batch({"video": jnp.asarray(VIDEO)}, jax.random.key(1))
    assert inputs.x0.shape == (2, 8, 8, 3)
    for example in range(2):
        assert any(np.array_equal(inputs.x0[example], VIDEO[example, t]) for t in range(6))


def test_image_sr_stage_takes_one_frame_and_downsamples():
    adapter = toy.toy_adapter(stage="sr")
    inputs = adapter.inputs_from_batch({"video": jnp.asarray(VIDEO)}, jax.random.key(6))
    assert inputs.x0.shape == (2, 8, 8, 3) and inputs.low_res.shape == (2, 4, 4, 3)
    for example in range(2):
        assert any(np.array_equal(inputs.x0[example], VIDEO[example, t]) for t in range(6))
    expected = np.asarray(inputs.x0).reshape(2, 4, 2, 4, 2, 3).mean((2, 4))
    np.testing.assert_allclose(inputs.low_res, expected, atol=1e-7, rtol=1e-6)


def test_ssr_stage_cuts_windows_and_downsamples():
    adapter = toy.toy_adapter(stage="ssr", frames=4)
    inputs = adapter.inputs_from_batch({"video": jnp.asarray(VIDEO)}, jax.random.key(2))
    assert inputs.x0.shape == (2, 4, 8, 8, 3) and inputs.low_res.shape == (2, 4, 4, 4, 3)
    for example in range(2):
        starts = [s for s in range(3) if np.array_equal(inputs.x0[example], VIDEO[example, s:s + 4])]
        assert len(starts) == 1
    expected = np.asarray(inputs.x0).reshape(2, 4, 4, 2, 4, 2, 3).mean((3, 5))
    np.testing.assert_allclose(inputs.low_res, expected, atol=1e-7, rtol=1e-6)


def test_conditional_stage_defaults_to_image_to_video():
    adapter = toy.toy_adapter(stage="conditional")
    inputs = adapter.inputs_from_batch({"video": jnp.asarray(VIDEO)}, jax.random.key(3))
    condition, mask = inputs.channel_condition[..., :3], inputs.channel_condition[..., 3:]
    assert inputs.x0.shape == (2, 4, 8, 8, 3)  # a 4-frame window of the 6-frame clips
    np.testing.assert_array_equal(mask[:, 0], 1.0)
    np.testing.assert_array_equal(mask[:, 1:], 0.0)
    np.testing.assert_array_equal(condition[:, 0], inputs.x0[:, 0])
    np.testing.assert_array_equal(condition[:, 1:], 0.0)
    assert adapter.model_input(inputs.x0, inputs).shape[-1] == 7


def test_conditional_stage_uses_given_masks_of_its_window():
    adapter = toy.toy_adapter(stage="conditional")
    video = VIDEO[:, :4]
    known = np.zeros((2, 4, 8, 8, 1), np.float32)
    known[:, 0] = 1.0
    known[:, 1:, :4] = 1.0
    batch = {"video": video, "condition": video * known, "condition_mask": known}
    inputs = adapter.inputs_from_batch(jax.tree.map(jnp.asarray, batch), jax.random.key(4))
    np.testing.assert_array_equal(inputs.x0, video)
    np.testing.assert_array_equal(inputs.channel_condition[..., 3:], known)
    np.testing.assert_array_equal(inputs.channel_condition[..., :3], video * known)


def test_conditional_stage_refuses_masks_of_longer_clips():
    """A window cut from masks of a longer clip loses the known first frame: masks must be drawn on the window."""
    adapter = toy.toy_adapter(stage="conditional")
    known = np.zeros((2, 6, 8, 8, 1), np.float32)
    known[:, 0] = 1.0
    batch = {"video": VIDEO, "condition": VIDEO * known, "condition_mask": known}
    with pytest.raises(ValueError, match="drawn on clips of 6 frames but the model sees windows of 4.*"
                                         "ConditionalInputs.window_frames = 4"):
        adapter.inputs_from_batch(jax.tree.map(jnp.asarray, batch), jax.random.key(4))


@pytest.mark.parametrize("stage", ["stunet", "ssr", "conditional"])
def test_video_stages_refuse_clips_shorter_than_the_model(stage):
    adapter = toy.toy_adapter(stage=stage, frames=8)
    with pytest.raises(ValueError, match="clips of 6 frames are shorter than the model's 8 frames"):
        adapter.inputs_from_batch({"video": jnp.asarray(VIDEO)}, jax.random.key(5))


def test_sample_shape_must_match_stage():
    with pytest.raises(ValueError, match="stage 'stunet' needs sample_shape of rank 4"):
        adapter_lib.ModelAdapter(name="x", module=toy.ToyDenoiser(), stage="stunet", text_encoder=toy.ToyTextEncoder(),
                                 sample_shape=(8, 8, 3))
