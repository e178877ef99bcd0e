"""Deterministic, resumable per-host input pipeline: seqio task / mixture -> model batches.

Design: batch k is a pure function of (config, seed, host shard, k). The tf.data graph is
deterministic (seeded file order, shuffle, mixture sampling and per-example augmentation seeds;
`deterministic=True` maps), and temporal windows and condition masks draw their randomness from (seed,
example index).
The iterator state is `{"step": k, ...}`: small, JSON-serialisable, saved in the model checkpoint's
metadata. Two ways to resume at step k, both giving exactly the batches of an uninterrupted run:

* skip: rebuild the pipeline and skip k batches. Always available; its cost grows with k (examples
  are read and preprocessed, then dropped).
* snapshot (as T5X saves the tf.data iterator with each checkpoint): `save_snapshot` writes the
  tf.data iterator with `tf.train.Checkpoint`, `set_state(state, snapshot_dir)` reads it back into a
  rebuilt graph; the cost does not grow with k. Snapshots are symbolic
  (`experimental_symbolic_checkpoint`): map, batch, prefetch, enumerate, interleave and mixture
  sampling save positions and seeds, not elements. A shuffle still saves its buffer: per host,
  `shuffle_buffer_size` preprocessed examples of every shuffled task (compressed). TFDS's in-memory
  auto-cache has no symbolic form, so pipelines read without it (it never changes the order);
  `cache_in_memory` pipelines write explicit snapshots, which also hold the cache and all buffers.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import logging
import os
from collections.abc import Mapping, Sequence

import jax
import numpy as np
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from lumiere_jax import faults, storage
from lumiere_jax.data import masks as masks_lib
from lumiere_jax.data.feature_converter import VideoFeatureConverter

_HOST_SEED_STRIDE = 1_000_003
_SNAPSHOT_STATE = "state.json"
_SNAPSHOT_ITERATOR = "iterator"


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
    window_frames: int | None = None         # video: cut a random window of this many frames (before masks)
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


@contextlib.contextmanager
def _tfds_without_autocache():
    """Builds TFDS reads without their in-memory auto-cache (a CacheDataset: no symbolic checkpoints).

    seqio takes the TFDS ReadConfig only from a process-wide override, so it is set while the datasets
    are built and put back afterwards.
    """
    previous = seqio.utils._TFDS_DATA_READ_CONFIG_OVERRIDE  # private: seqio has no getter
    read_config = (dataclasses.replace(previous, try_autocache=False) if previous is not None
                   else tfds.ReadConfig(try_autocache=False))
    seqio.utils.set_tfds_read_config_override(read_config)
    try:
        yield
    finally:
        seqio.utils.set_tfds_read_config_override(previous)


def _modality(provider: seqio.DatasetProviderBase) -> str:
    return "video" if "video" in provider.output_features else "image"


def _window_and_masks(
    dataset: tf.data.Dataset, config: InputConfig, shard_index: int, num_shards: int,
) -> tf.data.Dataset:
    """Cuts each clip to a random window of `config.window_frames`, then draws its condition masks.

    The window comes first so that C and M refer to the frames the model sees (an image-to-video example
    keeps its first frame known, a cinemagraph its static region). Randomness comes from (seed, global
    example number): no two hosts draw the same windows or masks.
    """
    frames = config.window_frames
    if frames is not None:
        clip_frames = dataset.element_spec["video"].shape[0]
        if clip_frames is None:
            raise ValueError(f"{config.mixture_or_task_name} has clips of unknown length; window_frames={frames} "
                             "needs clips of a fixed number of frames")
        if clip_frames < frames:
            raise ValueError(
                f"{config.mixture_or_task_name} has clips of {clip_frames} frames, fewer than the model's "
                f"window_frames={frames}; use clips of at least {frames} frames or a model with fewer frames")

    def cut_and_mask(index, example):
        example_seed = tf.stack([tf.constant(config.seed, tf.int64), index * num_shards + shard_index])
        window_seed, mask_seed = tf.unstack(tf.random.experimental.stateless_split(example_seed, 2))
        if frames is not None:
            video = example["video"]  # [T_clip, H, W, 3]
            start = tf.random.stateless_uniform(
                [], window_seed, maxval=video.shape[0] - frames + 1, dtype=tf.int32)
            window = tf.ensure_shape(video[start:start + frames], [frames, *video.shape[1:]])
            example = {**example, "video": window}  # [window_frames, H, W, 3]
        if config.mask_rates is not None:
            example = {**example, **masks_lib.add_condition(example["video"], mask_seed, config.mask_rates)}
        return example
    return dataset.enumerate().map(cut_and_mask, num_parallel_calls=tf.data.AUTOTUNE)


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
    with _tfds_without_autocache():
        dataset = provider.get_dataset(**kwargs)
    if config.mask_rates is not None and modality != "video":
        raise ValueError(f"{config.mixture_or_task_name} yields images; condition masks need video")
    if modality == "video" and (config.mask_rates is not None or config.window_frames is not None):
        dataset = _window_and_masks(dataset, config, shard_index, num_shards)

    pixel_length = dataset.element_spec[modality].shape[0]
    lengths = converter.task_feature_lengths(config.text_length, pixel_length)
    dataset = converter(dataset, lengths)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.skip(start_step)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_symbolic_checkpoint = not config.cache_in_memory
    # No autotuning thread: deleting an iterator waits for that thread's current sleep (up to a minute), so
    # every job exited, and every validation iterator was dropped, up to a minute late. AUTOTUNE maps then run
    # at the default parallelism; the pipeline keeps far ahead of the step without tuning (BENCHMARKS.md 5).
    options.autotune.enabled = False
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def snapshot_path(directory: str, shard_index: int, num_shards: int) -> str:
    """One host's snapshot inside a step's snapshot directory (hosts never write the same path)."""
    return storage.join(directory, f"shard_{shard_index:05d}_of_{num_shards:05d}")


def _same_input_config(saved: Mapping, current: Mapping) -> bool:
    """Whether a snapshot's input config is this one. A field added to InputConfig after the snapshot was written
    matches when this run leaves it at its default (the behaviour before the field existed)."""
    defaults = json.loads(json.dumps({field.name: field.default for field in dataclasses.fields(InputConfig)
                                      if field.default is not dataclasses.MISSING}))
    return set(saved) <= set(current) and all(saved.get(key, defaults.get(key)) == value
                                              for key, value in current.items())


class DataIterator:
    """Host-local numpy batches with a resumable position.

    `get_state()` -> {"step": batches handed out, "seed": ..., "name": ...}. `set_state(state)` rebuilds
    the pipeline at that step by skipping (and checks that seed and name match this config);
    `set_state(state, snapshot_dir)` reads the snapshot `save_snapshot(snapshot_dir)` wrote instead, and
    falls back to skipping, with a warning, when it is missing or unusable.
    """

    def __init__(self, config: InputConfig, start_step: int = 0,
                 shard_index: int | None = None, num_shards: int | None = None):
        self.config = config
        self.shard_index = jax.process_index() if shard_index is None else shard_index
        self.num_shards = jax.process_count() if num_shards is None else num_shards
        self._start(start_step)

    def _start(self, step: int) -> None:
        if step < 0:
            raise ValueError(f"start step {step} must be >= 0")
        self.step = step
        self._built_at = step  # the graph skips this many batches
        self._iterator: tf.data.Iterator | None = None  # built on first use
        self._restored: collections.deque = collections.deque()  # a snapshot's pending batches, served first

    def _tf_iterator(self) -> tf.data.Iterator:
        if self._iterator is None:
            self._iterator = iter(self._dataset(self._built_at))
        return self._iterator

    def _dataset(self, start_step: int) -> tf.data.Dataset:
        return make_dataset(self.config, start_step, self.shard_index, self.num_shards)

    def __iter__(self) -> DataIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._restored:
            batch = self._restored.popleft()
        else:
            # Iterated as tensors, not as_numpy_iterator(): only tf.data iterators can be checkpointed.
            # np.asarray shares the tensor's buffer (`.numpy()` would copy it).
            batch = {key: np.asarray(value) for key, value in next(self._tf_iterator()).items()}
        self.step += 1
        return batch

    def get_state(self) -> dict:
        return {"step": self.step, "seed": self.config.seed, "name": self.config.mixture_or_task_name}

    def _check_same_config(self, state: Mapping) -> None:
        for key, expected in (("seed", self.config.seed), ("name", self.config.mixture_or_task_name)):
            if key in state and state[key] != expected:
                raise ValueError(
                    f"iterator state has {key}={state[key]!r} but this pipeline uses {expected!r}; "
                    "restore with the same input config")

    def set_state(self, state: Mapping, snapshot_dir: str | None = None, require_commit: bool = True) -> None:
        self._check_same_config(state)
        if snapshot_dir is not None:
            try:
                self.restore_snapshot(snapshot_dir, state, require_commit)
                return
            except Exception as error:  # noqa: BLE001 -- an unusable snapshot only makes resuming slower
                logging.warning(
                    "input snapshot in %s is unusable (%s: %s); resuming the input pipeline by skipping %d "
                    "batches instead", snapshot_dir, type(error).__name__, str(error)[:300], int(state["step"]))
        self._start(int(state["step"]))

    def _snapshot_identity(self, step: int) -> dict:
        """What a snapshot must match to be restored: position, input config, host layout, checkpoint kind.

        (Positions alone would restore silently into a graph with, e.g., another batch size.)
        """
        config = json.loads(json.dumps(dataclasses.asdict(self.config)))
        return {**self.get_state(), "step": step, "shard_index": self.shard_index, "num_shards": self.num_shards,
                "symbolic": not self.config.cache_in_memory, "config": config}

    def save_snapshot(self, directory: str, pending: Sequence[Mapping[str, np.ndarray]] = ()) -> str:
        """Writes this host's position under `directory` (local or `gs://`); returns the host's snapshot path.

        `pending`: batches already taken from this iterator but not yet used (a prefetch queue), oldest
        first. They are saved with the snapshot and served first after a restore, so the snapshot
        resumes at `step - len(pending)`. TensorFlow writes the iterator to a local staging folder, which the
        storage layer uploads and commits (marker last), so an interrupted save is never read back.
        """
        batches = [*pending, *self._restored]
        state = {**self._snapshot_identity(self.step - len(pending)), "built_at": self._built_at,
                 "pending_batches": len(batches)}
        path = snapshot_path(directory, self.shard_index, self.num_shards)
        kill_point = functools.partial(faults.maybe_kill, "snapshot_commit", state["step"], self.shard_index)
        with storage.staged_directory(path, before_commit=kill_point) as staging:
            tf.train.Checkpoint(iterator=self._tf_iterator()).write(os.path.join(staging, _SNAPSHOT_ITERATOR))
            for index, batch in enumerate(batches):
                np.savez(os.path.join(staging, f"pending_{index}.npz"), **batch)
            with open(os.path.join(staging, _SNAPSHOT_STATE), "w") as file:
                file.write(json.dumps(state))
        return path

    def restore_snapshot(self, directory: str, state: Mapping, require_commit: bool = True) -> None:
        """Resumes at `state["step"]` from this host's snapshot in `directory`.

        Raises if the snapshot is missing, uncommitted, unreadable, or of another step, config or host layout;
        the iterator is then unchanged. `require_commit=False` reads snapshots written before commit markers
        existed (they were committed by a local rename).
        """
        self._check_same_config(state)
        path = snapshot_path(directory, self.shard_index, self.num_shards)
        if require_commit and not storage.is_committed(path):
            raise FileNotFoundError(f"no committed input snapshot at {path}")
        with storage.local_copy(path) as local:
            with open(os.path.join(local, _SNAPSHOT_STATE)) as file:
                saved = json.loads(file.read())
            expected = self._snapshot_identity(int(state["step"]))
            differences = {key: (saved.get(key), value) for key, value in expected.items()
                           if key != "config" and saved.get(key) != value}
            if not _same_input_config(saved.get("config", {}), expected["config"]):
                differences["config"] = (saved.get("config"), expected["config"])
            if differences:
                raise ValueError(
                    f"snapshot {path} is of another position or run ({{key: (saved, expected)}} = {differences})")
            iterator = iter(self._dataset(saved["built_at"]))
            tf.train.Checkpoint(iterator=iterator).read(os.path.join(local, _SNAPSHOT_ITERATOR)).assert_consumed()
            restored = collections.deque()
            for index in range(saved["pending_batches"]):
                with np.load(os.path.join(local, f"pending_{index}.npz")) as arrays:
                    restored.append({key: arrays[key] for key in arrays.files})
        self.step, self._built_at = saved["step"], saved["built_at"]
        self._iterator, self._restored = iterator, restored
        logging.info("input pipeline resumed at step %d from snapshot %s", self.step, path)
