"""Best float32 matmul FLOP/s this process reaches: the yardstick for the other benchmarks' achieved FLOP/s
(the measurement lives in `lumiere_jax.parallel.chips`, where the trainer's MFU falls back to it on CPU).

    python -m benchmarks.matmul_peak
"""

from __future__ import annotations

import argparse

from lumiere_jax.parallel.chips import matmul_flops_per_second, time_best

DEFAULT_SIZES = (1024, 2048)
__all__ = ["matmul_flops_per_second", "peak_flops_per_second", "time_best"]


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
