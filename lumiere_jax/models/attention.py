"""The single attention primitive every attention layer calls; swap it here for a TPU/GPU kernel."""

from __future__ import annotations

import jax


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                          mask: jax.Array | None = None) -> jax.Array:
    """softmax(q k^T / sqrt(d)) v with an optional key mask.

    Args:
      query: [B, Lq, N, D]; key, value: [B, Lk, N, D].
      mask: None or bool [B, Lk], True = attend to this key. Callers keep at least one key unmasked per row
        (cross-attention appends an always-visible null token), so no row softmaxes over nothing.
    Returns:
      [B, Lq, N, D].
    """
    if mask is not None:
        mask = mask[:, None, None, :]  # [B, 1 (heads), 1 (queries), Lk]
    return jax.nn.dot_product_attention(query, key, value, mask=mask)
