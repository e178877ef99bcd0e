"""Task registration: idempotent, data_dir configurable, never downloads; UCF101 only when present."""

import os

import numpy as np
import pytest
import seqio

from lumiere_jax.data import tasks


def _data_dir(task_name):
    return seqio.get_mixture_or_task(task_name).source.tfds_dataset.data_dir


def test_registration_is_idempotent_and_follows_data_dir(synthetic_data_dir, tmp_path):
    names = tasks.register_synthetic_motion_tasks(synthetic_data_dir, shuffle_buffer_size=16)
    assert "synthetic_motion_tiny_joint" in seqio.MixtureRegistry.names()
    assert set(names) - {"synthetic_motion_tiny_joint", "synthetic_motion_base_joint"} <= set(
        seqio.TaskRegistry.names())
    try:
        tasks.register_synthetic_motion_tasks(str(tmp_path))
        assert _data_dir("synthetic_motion_tiny") == str(tmp_path)
        mixture = seqio.get_mixture_or_task("synthetic_motion_tiny_joint")
        assert {task.source.tfds_dataset.data_dir for task in mixture.tasks} == {str(tmp_path)}
        # The empty data_dir has no prepared data: reading fails instead of downloading or building.
        with pytest.raises(AssertionError, match="could not find data"):  # tfds's error for unprepared data
            seqio.get_mixture_or_task("synthetic_motion_tiny").get_dataset(
                sequence_length={"text_tokens": 8}, split="train", shuffle=False)
        assert not any(name.startswith("synthetic_motion") for name in os.listdir(tmp_path))
    finally:
        tasks.register_synthetic_motion_tasks(synthetic_data_dir, shuffle_buffer_size=16)
    assert _data_dir("synthetic_motion_tiny") == synthetic_data_dir


def test_ucf101_is_skipped_when_absent(tmp_path):
    assert tasks.register_ucf101_task(str(tmp_path)) is None
    assert "ucf101_16x128" not in seqio.TaskRegistry.names()
    assert os.listdir(tmp_path) == []


def test_ucf101_captions_from_class_names():
    assert tasks.ucf101_caption("ApplyEyeMakeup") == "apply eye makeup"
    assert tasks.ucf101_caption("YoYo") == "yo yo"
    assert tasks.ucf101_caption("PlayingDaf") == "playing daf"
    assert tasks.ucf101_caption("HandstandPushups") == "handstand pushups"


def test_joint_mixture_rates(synthetic_data_dir):
    mixture = seqio.get_mixture_or_task("synthetic_motion_tiny_joint")
    rates = {task.name: mixture.get_rate(task) for task in mixture.tasks}
    np.testing.assert_allclose(
        [rates["synthetic_motion_tiny"], rates["synthetic_motion_image_tiny_as_video"]], [0.8, 0.2])
