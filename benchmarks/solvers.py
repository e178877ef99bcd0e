"""Solver accuracy: error of DDIM and DPM-Solver++(2M) against the probability-flow ODE's exact map, and the
steps each needs to reach a given error, on uniform and quadratic time grids.

For Gaussian data `x0 ~ N(m, S)` both the denoiser `E[x0 | z]` and the ODE's map from noise at t = 1 to data
are closed forms (below), so a deterministic solver's error is measurable exactly: the RMS difference between
its samples and the exact map of the same initial noise. Stochastic samplers (ddpm, ddim with eta > 0) do not
follow the ODE and are left out. Data: the 3-d Gaussian of tests/diffusion/conftest.py, cosine schedule.

    python -m benchmarks.solvers                        # errors at 10..400 steps, steps to 1e-2, 1e-3, DDIM@100
    python -m benchmarks.solvers --steps 10,25,100 --targets 1e-2
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from lumiere_jax.diffusion import samplers
from lumiere_jax.diffusion import schedules

SCHEDULE = schedules.get_schedule("cosine")
SOLVERS = ("ddim", "dpmpp_2m")
MEAN = np.array([0.5, -0.3, 0.2])
FACTOR = np.array([[0.6, 0.0, 0.0], [0.3, 0.4, 0.0], [-0.2, 0.25, 0.3]])  # covariance = FACTOR @ FACTOR.T
MAX_STEPS = 4096  # search limit for the steps a solver needs
SCAN_STEPS = 32  # below this every step count is tried


def gaussian_denoiser(mean: np.ndarray, covariance: np.ndarray):
    """Exact `E[x0 | z] = m + alpha S (alpha^2 S + sigma^2 I)^-1 (z - alpha m)`, `z: [B, d]`, `logsnr: [B]`.

    Written in the eigenbasis `S = U diag(l) U^T`: coordinate k is scaled by `alpha l_k / (alpha^2 l_k + sigma^2)`.
    """
    eigenvalues, eigenvectors = (jnp.asarray(a, jnp.float32) for a in np.linalg.eigh(covariance))
    mean = jnp.asarray(mean, jnp.float32)

    def denoise_fn(z, logsnr):
        alpha, sigma = (value[:, None] for value in schedules.alpha_sigma(logsnr))
        coordinates = (z - alpha * mean) @ eigenvectors
        gain = eigenvalues / (jnp.square(alpha) * eigenvalues + jnp.square(sigma))
        return mean + alpha * (coordinates * gain) @ eigenvectors.T

    return denoise_fn


def exact_flow_map(mean: np.ndarray, covariance: np.ndarray, z_init: np.ndarray, logsnr: float) -> np.ndarray:
    """The probability-flow ODE's map from `z_init: [B, d]` at `logsnr` to t = 0, in float64.

    In the covariance's eigenbasis the coordinates are independent Gaussians, and the flow keeps each one's
    standardised value: `x0_k = m_k + sqrt(l_k) (z_k - alpha m_k) / sqrt(alpha^2 l_k + sigma^2)`.
    """
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    alpha, sigma = np.sqrt(1 / (1 + np.exp(-logsnr))), np.sqrt(1 / (1 + np.exp(logsnr)))
    coordinates = (np.asarray(z_init, np.float64) - alpha * mean) @ eigenvectors
    standardised = coordinates / np.sqrt(alpha**2 * eigenvalues + sigma**2)
    return mean + (standardised * np.sqrt(eigenvalues)) @ eigenvectors.T


class FlowMapError:
    """RMS error of a solver's samples against the exact map, cached per (solver, spacing, steps)."""

    def __init__(self, num_samples: int, seed: int = 0):
        covariance = FACTOR @ FACTOR.T
        self.denoise_fn = gaussian_denoiser(MEAN, covariance)
        self.z_init = jax.random.normal(jax.random.key(seed), (num_samples, len(MEAN)), jnp.float32)
        self.keys = samplers.keys_per_row(jax.random.key(seed + 1), num_samples)
        self.exact = exact_flow_map(MEAN, covariance, np.asarray(self.z_init), float(SCHEDULE(1.0)))
        self.errors: dict[tuple[str, str, int], float] = {}

    @property
    def evaluations(self) -> int:
        return len(self.errors)

    def __call__(self, solver: str, spacing: str, num_steps: int) -> float:
        key = (solver, spacing, num_steps)
        if key not in self.errors:
            samples = _sample(self.denoise_fn, self.keys, self.z_init, num_steps, solver, spacing)
            self.errors[key] = float(np.sqrt(np.mean(np.square(np.asarray(samples, np.float64) - self.exact))))
        return self.errors[key]


@functools.partial(jax.jit, static_argnames=("denoise_fn", "num_steps", "solver", "spacing"))
def _sample(denoise_fn, keys, z_init, num_steps, solver, spacing):
    return samplers.sample(denoise_fn, keys, z_init, SCHEDULE, num_steps, sampler=solver, spacing=spacing)


def steps_to_reach(error: FlowMapError, solver: str, spacing: str, target: float) -> int | None:
    """Fewest steps whose error is <= `target` (None: not within MAX_STEPS).

    Every count up to SCAN_STEPS is tried (at few steps the error need not fall monotonically: dpmpp_2m on the
    quadratic grid has 1.1e-2 at 7 steps and 1.35e-2 at 9); beyond it, doubling finds a bracket and bisection
    searches it, which assumes the error falls monotonically there (the asymptotic regime).
    """
    for num_steps in range(1, SCAN_STEPS + 1):
        if error(solver, spacing, num_steps) <= target:
            return num_steps
    low, high = SCAN_STEPS, 2 * SCAN_STEPS  # error(low) > target, error(high) unknown
    while error(solver, spacing, high) > target:
        if high >= MAX_STEPS:
            return None
        low, high = high, min(2 * high, MAX_STEPS)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if error(solver, spacing, middle) <= target else (middle, high)
    return high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="10,15,25,50,100,200,400")
    parser.add_argument("--targets", default="1e-2,1e-3", help="fixed errors to reach (RMS, data std ~0.5)")
    parser.add_argument("--reference_steps", type=int, default=100,
                        help="also find the steps reaching DDIM's error at this many uniform steps")
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    start = time.perf_counter()
    error = FlowMapError(args.samples)
    grid = [(solver, spacing) for solver in SOLVERS for spacing in samplers.TIME_SPACINGS]
    steps = [int(value) for value in args.steps.split(",")]
    reference = error("ddim", "uniform", args.reference_steps)
    targets = {f"ddim uniform @{args.reference_steps} ({reference:.2e})": reference,
               **{f"{float(value):.0e}": float(value) for value in args.targets.split(",")}}
    print(f"RMS error against the exact flow map ({args.samples} samples, data std "
          f"{np.sqrt(np.trace(FACTOR @ FACTOR.T) / len(MEAN)):.2f}; float32 floor: dpmpp_2m quadratic @ 4096 "
          f"steps {error('dpmpp_2m', 'quadratic', 4096):.1e})\n")
    print("| solver | grid | " + " | ".join(f"{n} steps" for n in steps) + " |")
    print("|---|---|" + "---|" * len(steps))
    results = {"errors": {}, "steps_to_reach": {}}
    for solver, spacing in grid:
        values = [error(solver, spacing, n) for n in steps]
        results["errors"][f"{solver}/{spacing}"] = dict(zip(steps, values))
        print(f"| {solver} | {spacing} | " + " | ".join(f"{value:.2e}" for value in values) + " |")
    print("\nFewest steps reaching an error (search limit " + str(MAX_STEPS) + "):\n")
    print("| solver | grid | " + " | ".join(targets) + " |")
    print("|---|---|" + "---|" * len(targets))
    for solver, spacing in grid:
        needed = {name: steps_to_reach(error, solver, spacing, value) for name, value in targets.items()}
        results["steps_to_reach"][f"{solver}/{spacing}"] = needed
        print(f"| {solver} | {spacing} | " + " | ".join(
            str(n) if n is not None else f"> {MAX_STEPS}" for n in needed.values()) + " |")
    print(f"\n{error.evaluations} solver runs in {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
