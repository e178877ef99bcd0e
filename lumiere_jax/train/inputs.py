"""Training inputs from the seqio pipeline in `lumiere_jax.data` (gin entry point for `train.dataset_fn`)."""

from __future__ import annotations

import gin

from lumiere_jax.data import masks as masks_lib
from lumiere_jax.data import pipeline
from lumiere_jax.data import tasks
from lumiere_jax.data import text_cache
from lumiere_jax.data import vocab


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
    mask_rates: dict | None = None,
    window_frames: int | None = None,
    shuffle: bool = True,
    cache_in_memory: bool = False,
    text_cache_dir: str | None = None,
    text_encoder: str | None = None,
    t5_dir: str | None = None,
) -> pipeline.DataIterator:
    """A resumable iterator over `mixture_or_task_name` (the loop's `DatasetFn`).

    With `register_synthetic_motion` the synthetic_motion tasks over `data_dir` are registered (tokenised with
    `sentencepiece_model`, or bytes as ByT5 when None); `prepare_configs` (e.g. ("tiny",)) are rendered into
    `data_dir` first if missing. `conditional` adds condition videos and masks (paper 4.2; `mask_rates`
    overrides fields of `data.masks.MaskRates`, e.g. {'unconditional': 0.2}), drawn on the random
    window of `window_frames` frames the pipeline cuts from each clip (the model's frame count: bind
    `seqio_iterator.window_frames = @adapter_window_frames()`, as runs/finetune_conditional.gin does). The
    validation split is read in order, without shuffling, so held-out losses compare across steps.
    With `text_cache_dir` (gin_configs/data/text_cache.gin) examples and frozen-T5 embeddings come from the
    cache `python -m lumiere_jax.data.text_cache` built, read as `<name>_cached_text`; it must have been made
    by the run's encoder: preset `text_encoder` with weights from `t5_dir`, or (None) the random init of
    `seed`, the run's seed.
    """
    tasks.prepare_synthetic_motion(data_dir, tuple(prepare_configs))
    if register_synthetic_motion:
        tasks.register_synthetic_motion_tasks(data_dir, vocab.get_vocabulary(sentencepiece_model))
    if text_cache_dir:
        if not text_encoder:
            raise ValueError("seqio_iterator.text_cache_dir is set but text_encoder is not; bind "
                             "seqio_iterator.text_encoder = %TEXT_ENCODER (gin_configs/data/text_cache.gin does)")
        expected = text_cache.EncoderIdentity.create(text_encoder, text_length, t5_dir, seed)
        mixture_or_task_name = text_cache.register_cached_text(mixture_or_task_name, text_cache_dir, expected, split)
    config = pipeline.InputConfig(
        mixture_or_task_name=mixture_or_task_name, global_batch_size=batch_size * num_shards,
        text_length=text_length, split=split,
        seed=seed, shuffle=shuffle and split == "train", cache_in_memory=cache_in_memory,
        mask_rates=masks_lib.MaskRates(**(mask_rates or {})) if conditional else None, window_frames=window_frames)
    return pipeline.DataIterator(config, 0, shard_index, num_shards)
