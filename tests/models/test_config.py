"""Presets and gin-written models reach the stage factory; parameter counts split into T2I and temporal."""

import gin
import pytest

from lumiere_jax.models import config as model_config
from lumiere_jax.models.param_counts import count_parameters



def test_gin_bound_config_reaches_the_stage_factory():
    """A model written in gin (`unet_adapter.model_config = @UNetConfig()` and its fields) replaces the preset."""
    from lumiere_jax.stages import factory  # noqa: PLC0415 -- registers unet_adapter with gin

    gin.clear_config()
    try:
        gin.parse_config("""
            unet_adapter.stage = 't2i'
            unet_adapter.model_config = @UNetConfig()
            UNetConfig.image_size = 16
            UNetConfig.base_channels = 16
            UNetConfig.channel_multipliers = (1, 2)
            UNetConfig.num_res_blocks = 1
            UNetConfig.attention_levels = (1,)
            UNetConfig.cross_attention_levels = (1,)
            UNetConfig.num_heads = 2
            UNetConfig.norm_groups = 8
            UNetConfig.embed_dim = 32
            UNetConfig.text_embed_dim = 32
            UNetConfig.text_length = 8
            UNetConfig.temporal = None
        """)
        adapter = factory.unet_adapter()
    finally:
        gin.clear_config()
    assert adapter.sample_shape == (16, 16, 3)
    assert adapter.module.config.base_channels == 16 and adapter.module.config.channel_multipliers == (1, 2)
    assert adapter.module.config != model_config.t2i_config("tiny")


def test_tiny_parameter_counts_split():
    t2i = count_parameters(model_config.t2i_config("tiny"))
    stunet = count_parameters(model_config.stunet_config("tiny"))
    fixed = count_parameters(model_config.stunet_config("tiny", resampling=False))
    assert t2i["temporal"] == 0 and t2i["t2i"] == t2i["total"]
    assert stunet["t2i"] == t2i["total"]  # Inflation only adds temporal parameters.
    channels = model_config.t2i_config("tiny").level_channels
    # Resamplers: a 3-tap C -> C conv (+ bias) after each spatial down-sampling (levels 0, 1: C of that level)
    # and each spatial up-sampling (levels 2, 1: C of that level).
    resampler = sum(3 * c * c + c for c in channels[:-1] + channels[1:])
    assert stunet["temporal"] - fixed["temporal"] == resampler


def test_unknown_preset_size():
    with pytest.raises(ValueError, match="unknown preset size 'huge'"):
        model_config.t2i_config("huge")
