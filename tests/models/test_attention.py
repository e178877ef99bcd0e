"""dot_product_attention and the conditioning pieces against NumPy closed forms."""

import jax.numpy as jnp
import numpy as np

from lumiere_jax.models.attention import dot_product_attention
from lumiere_jax.models.conditioning import masked_mean, sinusoidal_embedding


def _numpy_attention(q, k, v, mask):
    logits = np.einsum("bqnd,bknd->bnqk", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(mask[:, None, None, :], logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bnqk,bknd->bqnd", weights, v)


def test_attention_matches_numpy_with_mask():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 5, 3, 4)).astype(np.float32)
    k = rng.standard_normal((2, 7, 3, 4)).astype(np.float32)
    v = rng.standard_normal((2, 7, 3, 4)).astype(np.float32)
    mask = np.arange(7)[None, :] < np.array([[3], [7]])
    out = np.asarray(dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask)))
    np.testing.assert_allclose(out, _numpy_attention(q, k, v, mask), rtol=1e-5, atol=1e-5)
    unmasked = np.asarray(dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)))
    np.testing.assert_allclose(unmasked, _numpy_attention(q, k, v, np.ones((2, 7), bool)), rtol=1e-5, atol=1e-5)


def test_sinusoidal_embedding_closed_form():
    values = np.array([-12.5, 0.0, 3.0], np.float32)
    out = np.asarray(sinusoidal_embedding(jnp.asarray(values), 8, max_period=1000.0))
    frequencies = 1000.0 ** (-np.arange(4) / 4)
    expected = np.concatenate([np.sin(values[:, None] * frequencies), np.cos(values[:, None] * frequencies)], -1)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_masked_mean_and_null_text():
    rng = np.random.default_rng(1)
    embeddings = rng.standard_normal((3, 4, 2)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], bool)
    out = np.asarray(masked_mean(jnp.asarray(embeddings), jnp.asarray(mask)))
    np.testing.assert_allclose(out[0], embeddings[0, :2].mean(0), rtol=1e-6)
    np.testing.assert_allclose(out[1], embeddings[1].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(out[2], np.zeros(2))
