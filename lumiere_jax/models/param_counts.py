"""Parameter counts of every preset, from shapes only (`jax.eval_shape`: nothing is allocated).

Run: `python -m lumiere_jax.models.param_counts`.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
from flax import traverse_util

from lumiere_jax.models import config as model_config
from lumiere_jax.models.param_paths import is_temporal
from lumiere_jax.models.unet import init_variables

KINDS = {
    "t2i": model_config.t2i_config,
    "stunet": model_config.stunet_config,
    "stunet_fixed_time": lambda size: model_config.stunet_config(size, resampling=False),
    "conditional": model_config.conditional_config,
    "ssr": model_config.ssr_config,
}


def count_parameters(config: model_config.UNetConfig) -> dict[str, int]:
    """{'total', 'temporal', 't2i'} parameter counts of `UNet(config)`."""
    abstract = jax.eval_shape(lambda rng: init_variables(config, rng), jax.random.key(0))
    flat = traverse_util.flatten_dict(nn.unbox(abstract)["params"])
    temporal = sum(math.prod(leaf.shape) for path, leaf in flat.items() if is_temporal(path))
    total = sum(math.prod(leaf.shape) for leaf in flat.values())
    return {"total": total, "temporal": temporal, "t2i": total - temporal}


def main() -> None:
    print(f"{'preset':<28}{'total':>16}{'temporal':>16}{'t2i':>16}")
    for size in model_config.PRESET_SIZES:
        for kind, make in KINDS.items():
            counts = count_parameters(make(size))
            print(f"{size + '/' + kind:<28}{counts['total']:>16,}{counts['temporal']:>16,}{counts['t2i']:>16,}")


if __name__ == "__main__":
    main()
