"""Training inputs from the seqio pipeline in `lumiere_jax.data` (gin entry point for `train.dataset_fn`)."""

from __future__ import annotations

import gin
import tensorflow_datasets as tfds

from lumiere_jax.data import masks as masks_lib
from lumiere_jax.data import pipeline
from lumiere_jax.data import tasks
from lumiere_jax.data import vocab


def prepare_synthetic_motion(data_dir: str | None, configs: tuple[str, ...]) -> None:
    """Builds procedural synthetic_motion configs into `data_dir` when missing (rendered locally, never downloaded)."""
    for config in configs:
        builder = tfds.builder(f"synthetic_motion/{config}", data_dir=data_dir)
        builder.download_and_prepare()


@gin.configurable
def seqio_iterator(
    split: str,
    batch_size: int,
    seed: int,
    shard_index: int,
    num_shards: int,
    *,
    mixture_or_task_name: str = gin.REQUIRED,
    text_length: int = 64,
    data_dir: str | None = None,
    register_synthetic_motion: bool = True,
    prepare_configs: tuple[str, ...] = (),
    sentencepiece_model: str | None = None,
    conditional: bool = False,
    shuffle: bool = True,
    cache_in_memory: bool = False,
) -> pipeline.DataIterator:
    """A resumable iterator over `mixture_or_task_name` (the loop's `DatasetFn`).

    With `register_synthetic_motion` the synthetic_motion tasks over `data_dir` are registered (tokenised with
    `sentencepiece_model`, or bytes as ByT5 when None); `prepare_configs` (e.g. ("tiny",)) are rendered into
    `data_dir` first if missing. `conditional` adds condition videos and masks (paper 4.2). The
    validation split is read in order, without shuffling, so held-out losses compare across steps.
    """
    prepare_synthetic_motion(data_dir, tuple(prepare_configs))
    if register_synthetic_motion:
        tasks.register_synthetic_motion_tasks(data_dir, vocab.get_vocabulary(sentencepiece_model))
    config = pipeline.InputConfig(
        mixture_or_task_name=mixture_or_task_name, global_batch_size=batch_size * num_shards,
        text_length=text_length, split=split,
        seed=seed, shuffle=shuffle and split == "train", cache_in_memory=cache_in_memory,
        mask_rates=masks_lib.MaskRates() if conditional else None)
    return pipeline.DataIterator(config, 0, shard_index, num_shards)
