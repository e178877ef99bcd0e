"""Builds the tiny synthetic_motion configs once per session into a temporary data_dir."""

import pytest
import tensorflow_datasets as tfds

from lumiere_jax.data import tasks

SHUFFLE_BUFFER = 16  # small: every pipeline built in a test fills it first


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> str:
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    for config in ("tiny", "image_tiny"):
        tfds.builder(f"synthetic_motion/{config}", data_dir=data_dir).download_and_prepare()
    tasks.register_synthetic_motion_tasks(data_dir, shuffle_buffer_size=SHUFFLE_BUFFER)
    return data_dir
