"""Dropout forward and backward with flax's threefry masks against the hashed ones (`models/dropout.py`).

Times `sum(dropout(x) * x)` and its gradient on one activation tensor, each mask kind and a plain elementwise pass
(`x * 1.1`, the floor), alternated in one process (best of `--repeats`).

    python -m benchmarks.dropout_masks                       # 16x64x64x64: one small-64 STUNet activation
    python -m benchmarks.dropout_masks --shape 16,32,32,128
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp

from lumiere_jax.models import dropout
from lumiere_jax.parallel import runtime
from lumiere_jax.parallel.chips import time_best

RATE = 0.1  # the small and paper presets' residual-block dropout


def forward_backward(layer):
    """jit of x -> (sum(layer(x) * x), d/dx), the layer's "dropout" key fixed."""
    def loss(x):
        return jnp.sum(layer.apply({}, x, rngs={"dropout": jax.random.key(0)}) * x)
    return jax.jit(jax.value_and_grad(loss))


def main(argv: list[str] | None = None) -> None:
    runtime.configure_cpu_flags()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="16,64,64,64", help="activation [N, H, W, C]")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    shape = tuple(map(int, args.shape.split(",")))
    x = jax.random.normal(jax.random.key(1), shape, jnp.float32)
    calls = {"threefry (nn.Dropout)": forward_backward(nn.Dropout(RATE, deterministic=False)),
             "hashed (models/dropout.py)": forward_backward(dropout.Dropout(RATE, deterministic=False)),
             "no dropout (x * 1.1)": jax.jit(jax.value_and_grad(lambda x: jnp.sum(x * 1.1 * x)))}
    best = {name: float("inf") for name in calls}
    for _ in range(3):  # alternate the kinds so that drifting load hits each alike
        for name, call in calls.items():
            best[name] = min(best[name], time_best(call, x, repeats=args.repeats))
    print(f"dropout rate {RATE} on {shape} float32, forward and backward ({jax.devices()[0].platform}):")
    for name, seconds in best.items():
        print(f"  {name:28s} {seconds * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
