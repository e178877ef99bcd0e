"""Condition inputs: <C, M> per mode against the training masks (data/masks.py), fitting, and clear errors."""

import os

import jax
import numpy as np
import pytest

from lumiere_jax.data import masks
from lumiere_jax.data import video_io
from lumiere_jax.sample import conditions
from lumiere_jax.stages import adapter as adapter_lib

T, H, W = 4, 16, 16
BOX_FRACTIONS = (0.25, 0.25, 0.75, 0.5)
BOX_PIXELS = (4, 4, 12, 8)


def test_masks_match_the_training_masks():
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (H, W, 3)).astype(np.float32)
    video = rng.uniform(-1, 1, (T, H, W, 3)).astype(np.float32)
    region = conditions.box_region(BOX_FRACTIONS, T, H, W)

    condition, mask = conditions.image_to_video(image, T)
    np.testing.assert_array_equal(mask, masks.kind_mask("image_to_video", T, H, W, np.array(BOX_PIXELS)).numpy())
    np.testing.assert_array_equal(condition[0], image)
    assert not condition[1:].any()

    condition, mask = conditions.inpainting(video, region)
    np.testing.assert_array_equal(mask, masks.kind_mask("inpainting", T, H, W, np.array(BOX_PIXELS)).numpy())
    np.testing.assert_array_equal(condition, video)

    condition, mask = conditions.cinemagraph(image, region)
    np.testing.assert_array_equal(mask, masks.kind_mask("cinemagraph", T, H, W, np.array(BOX_PIXELS)).numpy())
    np.testing.assert_array_equal(condition, np.broadcast_to(image, (T, H, W, 3)))

    condition, mask = conditions.text_to_video(T, H, W)
    assert not condition.any() and not mask.any()


def test_model_channels_are_masked_condition_then_mask():
    """What the sampler feeds the 7-channel model is what the trainer feeds it: <C * M, M>."""
    rng = np.random.default_rng(1)
    image = rng.uniform(-1, 1, (H, W, 3)).astype(np.float32)
    condition, mask = conditions.cinemagraph(image, conditions.box_region(BOX_FRACTIONS, T, H, W))
    adapter = adapter_lib.ModelAdapter(name="x", module=None, stage="conditional", text_encoder=None,
                                       sample_shape=(T, H, W, 3))
    channels = adapter.inputs_from_batch({"video": condition[None], "condition": condition[None],
                                          "condition_mask": mask[None]}, jax.random.key(0)).channel_condition[0]
    np.testing.assert_array_equal(np.asarray(channels[..., :3]), condition * mask)
    np.testing.assert_array_equal(np.asarray(channels[..., 3:]), mask)


def test_cover_crop_keeps_the_centre_and_sizes_pass_through():
    image = np.zeros((16, 32, 3), np.uint8)
    image[:, :8] = (255, 0, 0)
    image[:, 8:24] = (0, 255, 0)
    image[:, 24:] = (0, 0, 255)
    fitted = conditions.fit_image(image, 16, 16)
    np.testing.assert_allclose(fitted, np.broadcast_to([-1.0, 1.0, -1.0], (16, 16, 3)))
    exact = np.random.default_rng(2).integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    np.testing.assert_allclose(conditions.fit_video(exact, H, W), exact / 127.5 - 1.0, atol=1e-6)
    downscaled = conditions.fit_image(np.full((40, 30, 3), 200, np.uint8), H, W)
    np.testing.assert_allclose(downscaled, 200 / 127.5 - 1.0, atol=1e-5)


def test_region_file_is_cropped_like_its_image(tmp_path, condition_files):
    box = np.zeros((20, 24, 3), np.uint8)
    box[4:12, 6:18] = 255
    region = conditions.read_region(condition_files["region"], (20, 24), T, H, W)
    image_inside = conditions.fit_image(box, H, W)[..., 0] > 0
    assert region.shape == (T, H, W, 1)
    assert np.mean(region[0, ..., 0].astype(bool) == image_inside) > 0.95
    np.testing.assert_array_equal(region[0], region[-1])


def test_clear_errors(tmp_path, condition_files):
    with pytest.raises(conditions.ConditionError, match="does not exist"):
        conditions.read_image(os.fspath(tmp_path / "missing.png"))
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all")
    with pytest.raises(conditions.ConditionError, match="cannot read"):
        conditions.read_video(os.fspath(garbage), T)
    with pytest.raises(conditions.ConditionError, match="has 8 frames but the model generates 4"):
        conditions.read_video(condition_files["long_video"], T)
    with pytest.raises(conditions.ConditionError, match="an image is expected"):
        conditions.read_image(condition_files["video"])
    with pytest.raises(conditions.ConditionError, match="draw the mask at the size of the input"):
        conditions.read_region(condition_files["region"], (32, 32), T, H, W)
    three_frames = np.zeros((3, 20, 24, 3), np.uint8)
    video_io.write_mp4(os.fspath(tmp_path / "mask3.mp4"), three_frames, 8)
    with pytest.raises(conditions.ConditionError, match="has 3 frames"):
        conditions.read_region(os.fspath(tmp_path / "mask3.mp4"), (20, 24), T, H, W)
