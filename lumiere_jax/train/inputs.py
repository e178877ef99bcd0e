"""Training inputs from the seqio pipeline in `lumiere_jax.data` (gin entry point for `train.dataset_fn`)."""

from __future__ import annotations

import dataclasses

import gin

from lumiere_jax.data import masks as masks_lib
from lumiere_jax.data import pipeline
from lumiere_jax.data.tasks import SyntheticMotionConfig
from lumiere_jax.data import text_cache as text_cache_lib


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ConditionalInputs:
    """Condition videos and masks for the <J, C, M> model (paper 4.2), drawn on a random window of each clip.

    Attributes:
      window_frames: frames of the window the pipeline cuts from each clip before drawing the masks: the model's
        frame count, so that C and M refer to the frames the model sees (`@adapter_window_frames()`, as
        runs/finetune_conditional.gin binds it). None keeps whole clips.
      mask_rates: overrides of `data.masks.MaskRates` fields, e.g. {'unconditional': 0.2}.
    """

    window_frames: int | None = None
    mask_rates: dict | None = None


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TextCacheConfig:
    """Frozen-T5 embeddings read from a text cache (`python -m lumiere_jax.data.text_cache`) beside the examples.

    The cache must have been made by the run's encoder: preset `text_encoder` with weights from `t5_dir`, or
    (None) the random init of the run's seed (gin_configs/data/text_cache.gin binds both from the run's macros).
    """

    directory: str = gin.REQUIRED
    text_encoder: str | None = None
    t5_dir: str | None = None


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
    synthetic_motion: SyntheticMotionConfig | None = SyntheticMotionConfig(),
    conditional: ConditionalInputs | None = None,
    text_cache: TextCacheConfig | None = None,
    shuffle: bool = True,
    cache_in_memory: bool = False,
) -> pipeline.DataIterator:
    """A resumable iterator over `mixture_or_task_name` (the loop's `DatasetFn`).

    `synthetic_motion` registers the embedded tasks first (None: the task is registered elsewhere).
    `conditional` adds condition videos and masks (`ConditionalInputs`). The validation split is read in order,
    without shuffling, so held-out losses compare across steps. With `text_cache` (gin_configs/data/text_cache.gin)
    examples and frozen-T5 embeddings come from the cache, read as `<name>_cached_text`; `seed` is the run's.
    """
    if synthetic_motion is not None:
        synthetic_motion.register()
    if text_cache is not None:
        if not text_cache.text_encoder:
            raise ValueError("seqio_iterator.text_cache is set but its text_encoder is not; bind "
                             "TextCacheConfig.text_encoder = %TEXT_ENCODER (gin_configs/data/text_cache.gin does)")
        expected = text_cache_lib.EncoderIdentity.create(text_cache.text_encoder, text_length, text_cache.t5_dir,
                                                         seed)
        mixture_or_task_name = text_cache_lib.register_cached_text(mixture_or_task_name, text_cache.directory,
                                                                   expected, split)
    config = pipeline.InputConfig(
        mixture_or_task_name=mixture_or_task_name, global_batch_size=batch_size * num_shards,
        text_length=text_length, split=split,
        seed=seed, shuffle=shuffle and split == "train", cache_in_memory=cache_in_memory,
        mask_rates=masks_lib.MaskRates(**(conditional.mask_rates or {})) if conditional else None,
        window_frames=conditional.window_frames if conditional else None)
    return pipeline.DataIterator(config, 0, shard_index, num_shards)
