"""Deterministic, resumable per-host input pipeline: seqio task / mixture -> model batches.

Design: batch k is a pure function of (config, seed, host shard, k). The tf.data graph is
deterministic (seeded file order, shuffle, mixture sampling and per-example augmentation seeds;
`deterministic=True` maps), and condition masks draw their randomness from (seed, example index).
Resuming at step k rebuilds the pipeline and skips k batches, so it sees exactly the batches an
uninterrupted run would; the cost of the skip grows with k (examples are read and preprocessed,
then dropped). The iterator state is `{"step": k, ...}`: small, JSON-serialisable, saved beside the
model checkpoint by the trainer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import jax
import numpy as np
import seqio
import tensorflow as tf

from lumiere_jax.data import masks as masks_lib
from lumiere_jax.data.feature_converter import VideoFeatureConverter

_HOST_SEED_STRIDE = 1_000_003


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """What to read and how to batch it. Each host reads `global_batch_size / num_hosts` examples."""

    mixture_or_task_name: str
    global_batch_size: int
    text_length: int = 64
    split: str = "train"
    seed: int = 0
    shuffle: bool = True
    shuffle_buffer_size: int | None = None   # tasks only (None: the task's); mixtures use their tasks'
    mask_rates: masks_lib.MaskRates | None = None  # set for conditional fine-tuning
    cache_in_memory: bool = False            # keep decoded examples of small datasets in RAM
    num_epochs: int | None = None            # None: repeat forever


def host_batch_size(global_batch_size: int, process_count: int | None = None) -> int:
    """The per-host share of the global batch; raises if it does not split evenly over hosts."""
    process_count = jax.process_count() if process_count is None else process_count
    if global_batch_size % process_count:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by the {process_count} hosts; "
            f"use a multiple of {process_count}")
    return global_batch_size // process_count


def _provider(name: str) -> seqio.DatasetProviderBase:
    if name not in seqio.TaskRegistry.names() and name not in seqio.MixtureRegistry.names():
        raise ValueError(
            f"no seqio task or mixture named {name!r}; register it first "
            "(e.g. lumiere_jax.data.tasks.register_synthetic_motion_tasks(data_dir))")
    return seqio.get_mixture_or_task(name)


def _modality(provider: seqio.DatasetProviderBase) -> str:
    return "video" if "video" in provider.output_features else "image"


def _add_condition_masks(
    dataset: tf.data.Dataset, seed: int, rates: masks_lib.MaskRates, shard_index: int, num_shards: int,
) -> tf.data.Dataset:
    """Mask randomness from (seed, global example number): no two hosts draw the same masks."""
    def add(index, example):
        example_seed = tf.stack([tf.constant(seed, tf.int64), index * num_shards + shard_index])
        return {**example, **masks_lib.add_condition(example["video"], example_seed, rates)}
    return dataset.enumerate().map(add, num_parallel_calls=tf.data.AUTOTUNE)


def make_dataset(
    config: InputConfig,
    start_step: int = 0,
    shard_index: int | None = None,
    num_shards: int | None = None,
) -> tf.data.Dataset:
    """Host-local batches of model features (docs/ARCHITECTURE.md), starting at batch `start_step`.

    Host sharding defaults to (jax.process_index(), jax.process_count()). Each host's seqio seed is
    `seed + shard_index * _HOST_SEED_STRIDE`, so hosts draw different augmentations.
    """
    shard_index = jax.process_index() if shard_index is None else shard_index
    num_shards = jax.process_count() if num_shards is None else num_shards
    batch_size = host_batch_size(config.global_batch_size, num_shards)
    provider = _provider(config.mixture_or_task_name)
    modality = _modality(provider)
    converter = VideoFeatureConverter(modality=modality, conditional=config.mask_rates is not None)
    shard_info = seqio.ShardInfo(index=shard_index, num_shards=num_shards) if num_shards > 1 else None
    kwargs = dict(
        sequence_length={"text_tokens": config.text_length}, split=config.split,
        shuffle=config.shuffle, seed=config.seed + shard_index * _HOST_SEED_STRIDE,
        shard_info=shard_info, num_epochs=config.num_epochs, try_in_mem_cache=config.cache_in_memory)
    if isinstance(provider, seqio.Mixture):
        kwargs.update(log_mixing_proportions=False)
    elif config.shuffle_buffer_size is not None:
        kwargs.update(shuffle_buffer_size=config.shuffle_buffer_size)
    dataset = provider.get_dataset(**kwargs)
    if config.mask_rates is not None:
        if modality != "video":
            raise ValueError(f"{config.mixture_or_task_name} yields images; condition masks need video")
        dataset = _add_condition_masks(
            dataset, config.seed, config.mask_rates, shard_index, num_shards)

    pixel_length = dataset.element_spec[modality].shape[0]
    lengths = converter.task_feature_lengths(config.text_length, pixel_length)
    dataset = converter(dataset, lengths)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.skip(start_step)
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


class DataIterator:
    """Host-local numpy batches with a resumable position.

    `get_state()` -> {"step": batches consumed, "seed": ..., "name": ...}; `set_state(state)` rebuilds
    the pipeline at that step (and checks that seed and name match this config).
    """

    def __init__(self, config: InputConfig, start_step: int = 0,
                 shard_index: int | None = None, num_shards: int | None = None):
        self.config = config
        self._shard = (shard_index, num_shards)
        self._start(start_step)

    def _start(self, step: int) -> None:
        if step < 0:
            raise ValueError(f"start step {step} must be >= 0")
        self.step = step
        self._iterator: Iterator[dict[str, np.ndarray]] | None = None  # built on first use

    def __iter__(self) -> DataIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            self._iterator = make_dataset(self.config, self.step, *self._shard).as_numpy_iterator()
        batch = next(self._iterator)
        self.step += 1
        return batch

    def get_state(self) -> dict:
        return {"step": self.step, "seed": self.config.seed, "name": self.config.mixture_or_task_name}

    def set_state(self, state: dict) -> None:
        for key, expected in (("seed", self.config.seed), ("name", self.config.mixture_or_task_name)):
            if key in state and state[key] != expected:
                raise ValueError(
                    f"iterator state has {key}={state[key]!r} but this pipeline uses {expected!r}; "
                    "restore with the same input config")
        self._start(int(state["step"]))
