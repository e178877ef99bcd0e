"""Dropout whose mask is a hash of each element's index, keyed by the "dropout" RNG stream.

flax's `nn.Dropout` draws a threefry uniform per element, which XLA:CPU runs far below memory speed: dropout forward
and backward on a 16x64x64x64 float32 tensor takes 56 ms, against 5 ms for a plain elementwise pass; 6-15% of the
small STUNet's train step (BENCHMARKS.md 2a, `python -m benchmarks.dropout_masks`). Here each call draws two 32-bit
words from its threefry key and hashes the element index with them (murmur3's 32-bit finalizer, twice; ~14 integer
ops per element, 4.5 ms there). The mask depends on the element's global index only, so it is the same for any
sharding of the array and on any backend. T5X and MaxText swap threefry out of dropout for the same reason, for
XLA's RngBitGenerator (the "rbg" keys), whose bits may differ across backends and which is no faster on CPU.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_GOLDEN = 0x9E3779B9  # 2**32 / golden ratio: spreads consecutive row indices over the 32-bit range
_MAX_ROW = 2**32  # elements per leading-axis row that a uint32 index can number


def mix32(h: jax.Array) -> jax.Array:
    """murmur3's finalizer: a bijection of uint32 in which every input bit flips each output bit with p ~ 1/2."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def hashed_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Pseudo-random uint32 per element of `shape`: mix32(mix32(inner + s0) ^ (row * golden + s1)).

    row: index along the leading axis; inner: flat index within a row; (s0, s1): two words drawn from `key`.
    """
    row_size = math.prod(shape[1:])
    if row_size >= _MAX_ROW:
        raise ValueError(f"dropout over shape {shape}: {row_size} elements per leading-axis row do not fit the mask's "
                         f"32-bit index; fold more axes into the leading one (at most {_MAX_ROW - 1} per row)")
    seeds = jax.random.bits(key, (2,), jnp.uint32)  # [2]
    inner = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(1, len(shape))):
        inner = inner + lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
        stride *= shape[axis]
    rows = lax.broadcasted_iota(jnp.uint32, shape, 0) if shape else jnp.zeros((), jnp.uint32)
    return mix32(mix32(inner + seeds[0]) ^ (rows * jnp.uint32(_GOLDEN) + seeds[1]))


def keep_mask(key: jax.Array, shape: tuple[int, ...], keep_prob: float) -> jax.Array:
    """Boolean mask of `shape`, each element True with probability `keep_prob` (to 2**-32)."""
    threshold = min(round(keep_prob * 2**32), 2**32 - 1)
    return hashed_bits(key, shape) < jnp.uint32(threshold)


class Dropout(nn.Module):
    """Inverted dropout like `nn.Dropout` (kept elements scaled by 1 / (1 - rate)), mask from `keep_mask`."""

    rate: float
    deterministic: bool
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.deterministic or self.rate == 0.0:
            return x
        if self.rate == 1.0:
            return jnp.zeros_like(x)
        keep_prob = 1.0 - self.rate
        mask = keep_mask(self.make_rng(self.rng_collection), x.shape, keep_prob)
        return lax.select(mask, x / jnp.asarray(keep_prob, x.dtype), jnp.zeros_like(x))
