"""Best float32 matmul FLOP/s this process reaches: the yardstick for the other benchmarks' achieved FLOP/s.

    python -m benchmarks.matmul_peak
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

DEFAULT_SIZES = (1024, 2048)


def time_best(fn, *args, repeats: int) -> float:
    """Fastest of `repeats` timed calls (after one warm-up call that also compiles), in seconds."""
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def matmul_call(size: int):
    """`(call, flops)`: a compiled float32 `[size, size] @ [size, size]` product on fixed operands, 2 * size^3 FLOPs."""
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (size, size), jnp.float32)
    b = jax.random.normal(key_b, (size, size), jnp.float32)
    product = jax.jit(jnp.matmul)
    jax.block_until_ready(product(a, b))
    return (lambda: product(a, b)), 2.0 * size ** 3


def matmul_flops_per_second(size: int, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` float32 `[size, size] @ [size, size]` products (2 * size^3 FLOPs each)."""
    call, flops = matmul_call(size)
    return flops / time_best(call, repeats=repeats)


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
