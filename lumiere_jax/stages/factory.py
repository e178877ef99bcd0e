"""The five stages as model adapters over the real U-Net and frozen T5 encoder (gin entry points of training,
sampling and export).

  t2i:         image model from scratch.
  stunet:      STUNet on clips; T2I layers frozen, only temporal layers train (paper section 2).
  sr:          image super-resolution U-Net on still frames, noise-augmented low-res input.
  ssr:         spatial super-resolution inflated from the sr model (its layers frozen, only temporal layers
               train, as STUNet from T2I), on windows of T' frames, noise-augmented low-res input.
  conditional: STUNet on <J, C, M> (7 channels), fine-tuned from the unconditional STUNet (paper 4.2).

A run file picks the stage and a preset size (tiny / small / paper from `models/config.py`); a gin-bound
`UNetConfig` may replace the preset.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

import gin
import jax

from lumiere_jax.models import config as model_config_lib
from lumiere_jax.models import t5
from lumiere_jax.models import t5_weights
from lumiere_jax.models import unet
from lumiere_jax.stages import adapter as adapter_lib

_PRESETS = {"t2i": model_config_lib.t2i_config, "stunet": model_config_lib.stunet_config,
            "sr": model_config_lib.ssr_image_config, "ssr": model_config_lib.ssr_config,
            "conditional": model_config_lib.conditional_config}


def pattern_mask(patterns: Sequence[str]) -> Callable[[Any], Any]:
    """A trainable mask: True for parameters whose path ('down_0_temporal_conv_0/temporal_conv/kernel')
    fully matches one of the regexes. STUNet: ('.*temporal.*',) -- every temporal path names "temporal"."""
    compiled = [re.compile(pattern) for pattern in patterns]

    def mask(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: any(regex.fullmatch("/".join(str(getattr(key, "key", key)) for key in path))
                                for regex in compiled), params)
    return mask


@gin.configurable
def unet_adapter(
    stage: str = gin.REQUIRED,
    size: str = "tiny",
    model_config: model_config_lib.UNetConfig | None = None,
    overrides: dict | None = None,
    temporal_overrides: dict | None = None,
    text_encoder_preset: str = "tiny",
    text_length: int = 8,
    trainable_patterns: Sequence[str] | None = None,
    dtype: str | None = None,
    remat: str | None = None,
    upsample_residual_std: float | None = None,
) -> adapter_lib.ModelAdapter:
    """A `ModelAdapter` for `stage` ("t2i", "stunet", "sr", "ssr", "conditional").

    `model_config` replaces the preset of `size`; `overrides` ({field: value}) change preset fields while
    keeping the stage's own (channels, temporal, low-res), `temporal_overrides` those of its TemporalConfig;
    `dtype` ("bfloat16": bf16 compute, float32 parameters) and `remat` (a policy name, models/remat.py) override
    both. `trainable_patterns` (regexes over parameter paths) selects what trains, the rest is frozen; None
    trains everything. `upsample_residual_std` (SR stages): the model diffuses x0's residual over the bilinear
    upsample of its low-res input, preconditioned for residuals of this standard deviation
    (`ModelAdapter.upsample_residual_std`); the adapter's name records it, so a run resumed or sampled with
    another value fails clearly (sampling must bind the value training used).
    """
    if stage not in adapter_lib.STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {adapter_lib.STAGES}")
    config = model_config or _PRESETS[stage](size)
    changes = dict(overrides or {})
    changes.update({name: value for name, value in (("dtype", dtype), ("remat", remat)) if value is not None})
    if temporal_overrides:
        if config.temporal is None:
            raise ValueError(f"temporal_overrides given for stage {stage!r}, whose model has no temporal layers")
        changes["temporal"] = dataclasses.replace(config.temporal, **temporal_overrides)
    config = dataclasses.replace(config, **changes)
    text_encoder = t5.TextEncoder(t5.get_config(text_encoder_preset))
    if text_encoder.config.d_model != config.text_embed_dim:
        raise ValueError(f"text encoder {text_encoder_preset!r} has d_model={text_encoder.config.d_model} but the "
                         f"U-Net expects text_embed_dim={config.text_embed_dim}; pick matching presets")
    size_hw = (config.image_size, config.image_size, 3)
    image = stage in adapter_lib.IMAGE_STAGES
    sample_shape = size_hw if image else (config.temporal.num_frames, *size_hw)
    return adapter_lib.ModelAdapter(
        name=f"unet_{stage}{adapter_lib.upsample_residual_mark(upsample_residual_std)}", module=unet.UNet(config),
        stage=stage, text_encoder=text_encoder,
        sample_shape=sample_shape, low_res_size=config.low_res_size, text_length=text_length,
        trainable_mask=pattern_mask(trainable_patterns) if trainable_patterns is not None else None,
        window_frames=None if image else config.temporal.num_frames, upsample_residual_std=upsample_residual_std)


@gin.configurable
def adapter_window_frames(adapter: adapter_lib.ModelAdapter = gin.REQUIRED) -> int | None:
    """The frames of one training example of `adapter`'s model (None for images), for the input pipeline:
    `ConditionalInputs.window_frames = @adapter_window_frames()` with
    `adapter_window_frames.adapter = @unet_adapter()` cuts windows of the model's length before condition masks are
    drawn."""
    return adapter.window_frames


@gin.configurable
def sr_schedule_kwargs(adapter: adapter_lib.ModelAdapter = gin.REQUIRED) -> dict[str, int]:
    """`schedule_kwargs` of the SR's resolution-shifted cosine schedule (`schedules.logsnr_shifted_cosine`).

    Our choice (the paper is silent): the SR denoises frames `image_size / low_res_size` times larger than the
    base frames the plain cosine schedule serves, so its log-SNR is shifted by `2 log(low_res_size /
    image_size)` ("simple diffusion"; -4.2 for 128 -> 1024). Bound in runs/train_ssr.gin and sample/ssr.gin:
    `DiffusionConfig.schedule_kwargs = @sr_schedule_kwargs()` (runs/pretrain_sr.gin too: the image SR and the
    SSR inflated from it share the schedule).
    """
    if adapter.stage not in adapter_lib.SR_STAGES:
        raise ValueError(f"sr_schedule_kwargs needs an SR adapter ({adapter_lib.SR_STAGES}); got {adapter.stage!r}")
    return {"resolution": adapter.sample_shape[-2], "base_resolution": adapter.low_res_size}


@gin.configurable
def pretrained_text_encoder(directory: str | None = gin.REQUIRED, param_dtype: str = "float32"):
    """`text_encoder_params_fn` loading Hugging Face T5 v1.1 / ByT5 weights (frozen; outside the optimizer)."""
    if not directory:
        raise ValueError("no T5 weights directory: set T5_DIR (--gin.T5_DIR=/path/to/t5-v1_1-xxl, a Hugging Face "
                         "directory with config.json), or use a random tiny encoder (runs/cpu_tiny.gin)")

    def load(rng):
        del rng  # pretrained: nothing random
        return t5_weights.load_t5_encoder(directory, param_dtype=param_dtype)[1]
    return load
