"""Hashed dropout masks: a NumPy reimplementation of the hash, keep rates against the binomial, independence
between neighbouring elements, rows and keys, uniform bits, and the same mask under any sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from lumiere_jax.models import dropout

SHAPE = (8, 16, 16, 64)  # [N, H, W, C]: 131072 elements


def numpy_hashed_bits(seeds: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The documented hash in NumPy uint64 arithmetic reduced mod 2**32 (independent of the jnp code)."""
    mask32 = np.uint64(0xFFFFFFFF)

    def mix(h):
        h = h ^ (h >> np.uint64(16))
        h = (h * np.uint64(0x85EBCA6B)) & mask32
        h = h ^ (h >> np.uint64(13))
        h = (h * np.uint64(0xC2B2AE35)) & mask32
        return h ^ (h >> np.uint64(16))

    flat = np.arange(np.prod(shape), dtype=np.uint64).reshape(shape)
    row_size = np.uint64(np.prod(shape[1:]))
    rows, inner = flat // row_size, flat % row_size
    s0, s1 = (np.uint64(s) for s in seeds)
    return mix(mix((inner + s0) & mask32) ^ ((rows * np.uint64(0x9E3779B9) + s1) & mask32)).astype(np.uint32)


def test_bits_match_a_numpy_reimplementation():
    key = jax.random.key(3)
    seeds = np.asarray(jax.random.bits(key, (2,), jnp.uint32))
    np.testing.assert_array_equal(np.asarray(dropout.hashed_bits(key, SHAPE)), numpy_hashed_bits(seeds, SHAPE))


@pytest.mark.parametrize("keep_prob", [0.1, 0.5, 0.9])
def test_keep_rate_within_the_binomial_spread(keep_prob):
    n = np.prod(SHAPE)
    for seed in range(3):
        kept = float(dropout.keep_mask(jax.random.key(seed), SHAPE, keep_prob).mean())
        assert abs(kept - keep_prob) < 5 * np.sqrt(keep_prob * (1 - keep_prob) / n), (seed, kept)


def test_bits_are_uniform_bytes():
    """Chi-square of each byte of the 32-bit words over 256 bins, against 255 degrees of freedom."""
    bits = np.asarray(dropout.hashed_bits(jax.random.key(0), SHAPE)).ravel()
    for shift in (0, 8, 16, 24):
        counts = np.bincount((bits >> shift) & 0xFF, minlength=256)
        expected = bits.size / 256
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 360, (shift, chi2)  # P(chi2_255 > 360) ~ 1e-5


def test_masks_of_neighbours_rows_and_keys_are_uncorrelated():
    mask = np.asarray(dropout.keep_mask(jax.random.key(1), SHAPE, 0.5), np.float64)
    other = np.asarray(dropout.keep_mask(jax.random.key(2), SHAPE, 0.5), np.float64)
    bound = 5 / np.sqrt(mask.size / 2)  # correlations below are over >= half the elements

    def corr(a, b):
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    for axis in range(len(SHAPE)):  # the next element along each axis, rows included
        first = np.take(mask, np.arange(SHAPE[axis] - 1), axis=axis)
        second = np.take(mask, np.arange(1, SHAPE[axis]), axis=axis)
        assert abs(corr(first, second)) < bound, axis
    assert abs(corr(mask, other)) < bound  # another key
    assert abs(corr(mask[: SHAPE[0] // 2], mask[SHAPE[0] // 2:])) < bound  # rows far apart


def test_same_key_same_mask_and_the_mask_ignores_sharding():
    key = jax.random.key(7)
    local = np.asarray(dropout.keep_mask(key, SHAPE, 0.9))
    np.testing.assert_array_equal(local, np.asarray(dropout.keep_mask(key, SHAPE, 0.9)))
    mesh = jax.make_mesh((4, 2), ("rows", "channels"), devices=jax.devices()[:8])
    sharding = NamedSharding(mesh, PartitionSpec("rows", None, None, "channels"))
    sharded = jax.jit(lambda k: dropout.keep_mask(k, SHAPE, 0.9), out_shardings=sharding)(key)
    assert len(sharded.sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(sharded), local)


def test_module_scales_kept_elements_and_passes_through_when_deterministic():
    x = jax.random.normal(jax.random.key(0), SHAPE)
    rngs = {"dropout": jax.random.key(5)}
    y = dropout.Dropout(0.25, deterministic=False).apply({}, x, rngs=rngs)
    kept = np.asarray(y) != 0
    np.testing.assert_allclose(np.asarray(y)[kept], np.asarray(x)[kept] / 0.75, rtol=1e-6)
    assert abs(kept.mean() - 0.75) < 5 * np.sqrt(0.75 * 0.25 / x.size)
    np.testing.assert_array_equal(dropout.Dropout(0.25, deterministic=True).apply({}, x), x)
    np.testing.assert_array_equal(dropout.Dropout(1.0, deterministic=False).apply({}, x, rngs=rngs), 0 * x)
    other = dropout.Dropout(0.25, deterministic=False).apply({}, x, rngs={"dropout": jax.random.key(6)})
    assert (np.asarray(other) != np.asarray(y)).any()


def test_rows_too_long_for_the_index_are_refused():
    with pytest.raises(ValueError, match="fold more axes into the leading one"):
        dropout.hashed_bits(jax.random.key(0), (1, 2**16, 2**16))
