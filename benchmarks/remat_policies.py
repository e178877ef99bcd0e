"""Each remat policy (models/remat.py) of one STUNet preset, compiled for the CPU backend: what the backward pass
keeps from the forward pass (the residuals of `jax.vjp`, backend-independent), XLA:CPU's temporaries and FLOPs
of the loss gradient, one clip. Compiled only, never run.

  python -m benchmarks.remat_policies --size small --frames 8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource

import flax.linen as nn
import jax
import jax.numpy as jnp

from lumiere_jax.models import config as config_lib
from lumiere_jax.models.remat import REMAT_POLICIES
from lumiere_jax.models.unet import UNet, example_inputs, init_variables


def policy_figures(config: config_lib.UNetConfig, params, inputs) -> dict:
    model = UNet(config)

    def loss(p):
        return jnp.mean(model.apply({"params": p}, **inputs) ** 2)

    residuals = jax.eval_shape(lambda p: jax.vjp(loss, p)[1], params)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    compiled = jax.jit(jax.grad(loss)).lower(params).compile()
    memory = compiled.memory_analysis()
    return dict(policy=config.remat, saved_residual_bytes=sum(leaf.size * leaf.dtype.itemsize
                                                              for leaf in jax.tree.leaves(residuals)),
                temp_bytes=memory.temp_size_in_bytes, flops=compiled.cost_analysis()["flops"],
                compile_cpu_s=resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu_before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=config_lib.PRESET_SIZES)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--policies", default=",".join(REMAT_POLICIES))
    args = parser.parse_args()
    preset = config_lib.stunet_config(args.size)
    config = dataclasses.replace(preset, temporal=dataclasses.replace(preset.temporal, num_frames=args.frames))
    inputs = example_inputs(config, batch_size=1)
    params = nn.unbox(jax.eval_shape(lambda key: init_variables(config, key), jax.random.key(0)))["params"]
    for policy in args.policies.split(","):
        print(json.dumps(policy_figures(dataclasses.replace(config, remat=policy), params, inputs)), flush=True)


if __name__ == "__main__":
    main()
