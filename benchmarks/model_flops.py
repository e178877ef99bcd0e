"""Analytic model FLOPs (lumiere_jax/models/flops.py) against XLA's cost analysis of the same un-rematted
STUNet forward pass and frozen-T2I training gradient, compiled (never run) on the CPU backend.

    python -m benchmarks.model_flops --size small          # 16x64x64, about a minute per compile here
"""

from __future__ import annotations

import argparse
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from lumiere_jax.models import config as config_lib
from lumiere_jax.models import flops as flops_lib
from lumiere_jax.models import param_paths
from lumiere_jax.models.unet import UNet, example_inputs


def compiled_flops(compiled) -> float:
    """FLOPs of a compiled program by XLA's cost analysis (a dict, or a one-element list of it on some versions)."""
    cost = compiled.cost_analysis()
    return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


def xla_flops(fn, *args) -> float:
    return compiled_flops(jax.jit(fn).lower(*args).compile())


def compare(size: str, batch_size: int) -> dict[str, tuple[float, float]]:
    """`{"forward" | "train": (XLA FLOPs, analytic FLOPs)}`; analytic counts taps inside the input, as XLA."""
    config = dataclasses.replace(config_lib.stunet_config(size), remat="none")
    frames = config.temporal.num_frames
    inputs = example_inputs(config, batch_size, True)
    params = nn.unbox(jax.eval_shape(lambda: UNet(config).init(jax.random.key(0), **inputs))["params"])
    flat = param_paths.flatten(params)
    trained = {path: leaf for path, leaf in flat.items() if param_paths.is_temporal(path)}
    frozen = {path: leaf for path, leaf in flat.items() if not param_paths.is_temporal(path)}

    def loss(trained, frozen, inputs):
        merged = param_paths.unflatten({**trained, **frozen})
        return jnp.mean(UNet(config).apply({"params": merged}, **inputs).astype(jnp.float32) ** 2)

    count = flops_lib.model_flops(config, batch_size, frames, trained=param_paths.is_temporal, padding_taps=False)
    return {"forward": (xla_flops(lambda v, i: UNet(config).apply(v, **i), {"params": params}, inputs),
                        count.forward),
            "train": (xla_flops(jax.grad(loss), trained, frozen, inputs), count.train)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=config_lib.PRESET_SIZES)
    parser.add_argument("--batch_size", type=int, default=1)
    args = parser.parse_args()
    for name, (xla, analytic) in compare(args.size, args.batch_size).items():
        print(f"{args.size} STUNet {name}: XLA {xla / 1e12:.4f} TFLOP, analytic {analytic / 1e12:.4f} TFLOP, "
              f"ratio {xla / analytic:.3f}")


if __name__ == "__main__":
    main()
