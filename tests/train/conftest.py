"""Shared fixtures for trainer tests: the toy model module on sys.path, environments for CLI subprocesses."""

import os
import pathlib
import sys

import jax
import pytest
import tensorflow_datasets as tfds

from lumiere_jax.data import synthetic_motion  # noqa: F401  (registers the builder)

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory):
    """Environment for `python -m lumiere_jax.train` subprocesses: CPU, toy module importable, and a persistent
    compilation cache shared by the runs of this session (identical configs compile once)."""
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0",
        PYTHONPATH=os.pathsep.join([str(HERE), str(REPO), env.get("PYTHONPATH", "")]),
        JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    return env


@pytest.fixture(scope="session")
def synthetic_tiny_dir(tmp_path_factory):
    """synthetic_motion tiny video and image configs, rendered once per session."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    for config in ("tiny", "image_tiny"):
        tfds.builder(f"synthetic_motion/{config}", data_dir=data_dir).download_and_prepare()
    return data_dir


@pytest.fixture(scope="module", autouse=True)
def fast_random_compiles():
    """XLA:CPU at its default optimisation level spends ~7 s compiling each program that draws partitionable
    threefry random bits; the classic generator compiles in ~1 s. These tests compare runs made under the same
    setting, so the generator choice does not affect what they check. Restored afterwards."""
    previous = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", False)
    yield
    jax.config.update("jax_threefry_partitionable", previous)
