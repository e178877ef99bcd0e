"""The built synthetic_motion dataset: stored attributes match captions and pixels; seqio reads it."""

import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

from lumiere_jax.data import pipeline, synthetic_motion, vocab
from lumiere_jax.data import synthetic_render as render


def _decode_labels(builder, example):
    features = builder.info.features
    return {key: features[key].int2str(int(example[key]))
            for key in ("shape", "object_color", "background_color", "motion", "speed")
            if key in example}


def test_video_examples_match_their_attributes(synthetic_data_dir):
    builder = tfds.builder("synthetic_motion/tiny", data_dir=synthetic_data_dir)
    assert builder.info.splits["train"].num_examples == 512
    assert builder.info.metadata["fps"] == 8
    for example in tfds.as_numpy(builder.as_dataset(split="validation").take(24)):
        video = example["video"]
        assert video.shape == (16, 32, 32, 3) and video.dtype == np.uint8
        labels = _decode_labels(builder, example)
        scene = render.Scene(**labels, radius=float(example["radius"]), positions=example["positions"])
        assert example["caption"].decode() == render.caption(scene)
        # Colour-segment the decoded frames: the object is where the stored positions say.
        is_object = np.all(video == render.COLORS[labels["object_color"]], axis=-1)  # [T, H, W]
        is_background = np.all(video == render.COLORS[labels["background_color"]], axis=-1)
        assert np.all(is_object | is_background)
        for frame_mask, position in zip(is_object, example["positions"]):
            ys, xs = np.nonzero(frame_mask)
            np.testing.assert_allclose([ys.mean() + 0.5, xs.mean() + 0.5], position, atol=0.75)


def test_generation_is_deterministic_and_matches_the_stored_data(synthetic_data_dir):
    builder = tfds.builder("synthetic_motion/tiny", data_dir=synthetic_data_dir)
    config = builder.builder_config
    stored = {int(example["positions"][0, 0] * 1e4): example for example in
              tfds.as_numpy(builder.as_dataset(split="validation"))}
    for index in (0, 7, 63):
        fresh = synthetic_motion.generate_example(config, "validation", index)
        again = synthetic_motion.generate_example(config, "validation", index)
        np.testing.assert_array_equal(fresh["video"], again["video"])
        example = stored[int(fresh["positions"][0, 0] * 1e4)]
        np.testing.assert_array_equal(example["video"], fresh["video"])
        assert example["caption"].decode() == fresh["caption"]
    other = synthetic_motion.generate_example(config, "train", 0)
    assert other["caption"] != synthetic_motion.generate_example(config, "validation", 0)["caption"] or \
        not np.array_equal(other["positions"], synthetic_motion.generate_example(
            config, "validation", 0)["positions"])


def test_image_config_stores_still_images(synthetic_data_dir):
    builder = tfds.builder("synthetic_motion/image_tiny", data_dir=synthetic_data_dir)
    for example in tfds.as_numpy(builder.as_dataset(split="validation").take(8)):
        assert example["image"].shape == (32, 32, 3)
        labels = _decode_labels(builder, example)
        assert "motion" not in example
        assert example["caption"].decode() == (
            f"a {labels['object_color']} {labels['shape']} on a {labels['background_color']} background")
        ys, xs = np.nonzero(np.all(example["image"] == render.COLORS[labels["object_color"]], axis=-1))
        np.testing.assert_allclose([ys.mean() + 0.5, xs.mean() + 0.5], example["position"], atol=0.75)


def test_seqio_task_yields_normalised_clips_and_tokens(synthetic_data_dir):
    text_length = 40
    config = pipeline.InputConfig(
        "synthetic_motion_tiny", global_batch_size=6, text_length=text_length, split="validation",
        shuffle=False)
    batch = next(pipeline.DataIterator(config))
    assert batch["video"].shape == (6, 16, 32, 32, 3) and batch["video"].dtype == np.float32
    assert -1.0 <= batch["video"].min() and batch["video"].max() <= 1.0
    # Unshuffled, the task reads the split in tfds order; 16 stored frames -> the whole clip.
    builder = tfds.builder("synthetic_motion/tiny", data_dir=synthetic_data_dir)
    reference = list(tfds.as_numpy(builder.as_dataset(split="validation", shuffle_files=False).take(6)))
    expected_video = np.stack([example["video"] for example in reference]) / 127.5 - 1.0
    np.testing.assert_allclose(batch["video"], expected_video, atol=1e-6)
    tokens, mask = vocab.tokenize(
        [example["caption"].decode() for example in reference], seqio.ByteVocabulary(), text_length)
    np.testing.assert_array_equal(batch["text_tokens"], tokens)
    np.testing.assert_array_equal(batch["text_mask"], mask)
    assert batch["text_tokens"].dtype == np.int32 and batch["text_mask"].dtype == bool


def test_image_task_and_joint_mixture(synthetic_data_dir):
    image_batch = next(pipeline.DataIterator(pipeline.InputConfig(
        "synthetic_motion_image_tiny", global_batch_size=4, text_length=16, shuffle_buffer_size=8)))
    assert image_batch["image"].shape == (4, 32, 32, 3) and "video" not in image_batch
    assert -1.0 <= image_batch["image"].min() and image_batch["image"].max() <= 1.0
    joint = pipeline.DataIterator(pipeline.InputConfig(
        "synthetic_motion_tiny_joint", global_batch_size=16, text_length=64))
    videos, captions = [], []
    for _ in range(2):
        batch = next(joint)
        videos.append(batch["video"])
        captions += [seqio.ByteVocabulary().decode(row.tolist()) for row in batch["text_tokens"]]
    videos = np.concatenate(videos)
    is_still = np.all(videos == videos[:, :1], axis=(1, 2, 3, 4))
    motion_words = ("moving", "circling", "bouncing", "standing still")
    names_motion = np.array([any(word in caption for word in motion_words) for caption in captions])
    # Images become still clips whose captions name no motion; moving clips name theirs.
    assert is_still.any() and (~is_still).any()
    assert np.all(names_motion[~is_still])
    assert not np.all(names_motion[is_still])


def test_command_line_renders_the_named_configs_once(tmp_path, capsys):
    assert synthetic_motion.main([f"--data_dir={tmp_path}", "--configs=image_tiny"]) == 0
    builder = tfds.builder("synthetic_motion/image_tiny", data_dir=str(tmp_path))
    config = next(config for config in synthetic_motion.BUILDER_CONFIGS if config.name == "image_tiny")
    assert builder.info.splits["train"].num_examples == config.num_train
    assert builder.info.splits["validation"].num_examples == config.num_validation
    assert "dataset ready: synthetic_motion/image_tiny in " in capsys.readouterr().out
    files = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()}
    assert synthetic_motion.main([f"--data_dir={tmp_path}", "--configs=image_tiny"]) == 0  # found prepared
    assert {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()} == files


def test_command_line_names_an_unknown_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        synthetic_motion.main([f"--data_dir={tmp_path}", "--configs=tiny,huge"])
    assert exit_info.value.code == 2
    assert "unknown configs ['huge']" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing rendered before the check
