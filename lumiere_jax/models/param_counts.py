"""Parameter counts of every preset, from shapes only (`jax.eval_shape`: nothing is allocated).

Run: `python -m lumiere_jax.models.param_counts`; with DeepFloyd IF stage I `unet/config.json` files as arguments,
the counts of those IF U-Nets and of their STUNets as runs/train_stunet_from_if.gin inflates them (80 frames, 4
temporal attention blocks of 16 heads): `python -m lumiere_jax.models.param_counts IF-I-XL-v1.0/unet/config.json`.
"""

from __future__ import annotations

import json
import math
import sys

import flax.linen as nn
import jax
from flax import traverse_util

from lumiere_jax.models import config as model_config
from lumiere_jax.models import if_config, if_unet
from lumiere_jax.models.param_paths import is_temporal
from lumiere_jax.models.unet import init_variables

IF_STUNET_TEMPORAL = model_config.TemporalConfig(num_frames=80, resampling=True, attention_blocks=4,
                                                 attention_heads=16)  # runs/train_stunet_from_if.gin

KINDS = {
    "t2i": model_config.t2i_config,
    "stunet": model_config.stunet_config,
    "stunet_fixed_time": lambda size: model_config.stunet_config(size, resampling=False),
    "conditional": model_config.conditional_config,
    "ssr": model_config.ssr_config,
}


def count_parameters(config: model_config.UNetConfig | if_config.IFUNetConfig) -> dict[str, int]:
    """{'total', 'temporal', 't2i'} parameter counts of `UNet(config)` (or of `IFUNet(config)`)."""
    init = if_unet.init_variables if isinstance(config, if_config.IFUNetConfig) else init_variables
    abstract = jax.eval_shape(lambda rng: init(config, rng), jax.random.key(0))
    flat = traverse_util.flatten_dict(nn.unbox(abstract)["params"])
    temporal = sum(math.prod(leaf.shape) for path, leaf in flat.items() if is_temporal(path))
    total = sum(math.prod(leaf.shape) for leaf in flat.values())
    return {"total": total, "temporal": temporal, "t2i": total - temporal}


def main(argv: list[str] | None = None) -> None:
    config_files = sys.argv[1:] if argv is None else argv
    print(f"{'preset':<28}{'total':>16}{'temporal':>16}{'t2i':>16}")
    for path in config_files:
        with open(path) as file:
            fields = json.load(file)
        for kind, temporal in (("if", None), ("if_stunet", IF_STUNET_TEMPORAL)):
            counts = count_parameters(if_config.config_from_diffusers(fields, temporal=temporal))
            print(f"{path}:{kind}  {counts['total']:>16,}{counts['temporal']:>16,}{counts['t2i']:>16,}")
    if config_files:
        return
    for size in model_config.PRESET_SIZES:
        for kind, make in KINDS.items():
            counts = count_parameters(make(size))
            print(f"{size + '/' + kind:<28}{counts['total']:>16,}{counts['temporal']:>16,}{counts['t2i']:>16,}")


if __name__ == "__main__":
    main()
