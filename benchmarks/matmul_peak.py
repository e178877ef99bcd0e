"""Best float32 matmul FLOP/s this process reaches: the yardstick for the other benchmarks' achieved FLOP/s
(the measurement lives in `lumiere_jax.parallel.chips`, where the trainer's MFU falls back to it on CPU).

    python -m benchmarks.matmul_peak
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from lumiere_jax.parallel.chips import matmul_flops_per_second, time_best

DEFAULT_SIZES = (1024, 2048)
__all__ = ["matmul_call", "matmul_flops_per_second", "peak_flops_per_second", "time_best"]


def matmul_call(size: int):
    """`(call, flops)`: a compiled float32 `[size, size] @ [size, size]` product on fixed operands, 2 * size^3 FLOPs."""
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (size, size), jnp.float32)
    b = jax.random.normal(key_b, (size, size), jnp.float32)
    product = jax.jit(jnp.matmul)
    jax.block_until_ready(product(a, b))
    return (lambda: product(a, b)), 2.0 * size ** 3


def peak_flops_per_second(sizes=DEFAULT_SIZES, repeats: int = 5) -> float:
    """Best FLOP/s over `sizes` (the machine's practical float32 peak on one device)."""
    return max(matmul_flops_per_second(size, repeats) for size in sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for size in map(int, args.sizes.split(",")):
        print(f"float32 matmul {size}^3: {matmul_flops_per_second(size, args.repeats) / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
