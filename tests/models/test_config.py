"""Presets: gin files equal the Python presets; parameter counts split into T2I and temporal consistently."""

import pathlib

import gin
import pytest

from lumiere_jax.models import config as model_config
from lumiere_jax.models.param_counts import count_parameters

GIN_DIR = pathlib.Path(__file__).resolve().parents[2] / "gin_configs" / "models"
PRESETS = {"t2i": model_config.t2i_config, "stunet": model_config.stunet_config,
           "ssr": model_config.ssr_config, "conditional": model_config.conditional_config}


@pytest.mark.parametrize("size", model_config.PRESET_SIZES)
@pytest.mark.parametrize("kind", sorted(PRESETS))
def test_gin_file_equals_python_preset(kind, size):
    gin.clear_config()
    try:
        gin.parse_config_file(str(GIN_DIR / f"{kind}_{size}.gin"))
        assert model_config.UNetConfig() == PRESETS[kind](size)
    finally:
        gin.clear_config()
    assert model_config.UNetConfig() == model_config.UNetConfig(temporal=None)  # Bindings gone.


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
