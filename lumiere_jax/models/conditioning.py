"""The conditioning vector (log-SNR, pooled text, SR noise-augmentation level) and the text tokens."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lumiere_jax.models.layers import Dtype, TOKEN_AXES, dense_layer, layer_norm
from lumiere_jax.parallel.mesh import constrain_activation


def sinusoidal_embedding(values: jax.Array, dim: int, max_period: float = 1000.0) -> jax.Array:
    """[sin(v * f_i), cos(v * f_i)] with f_i = max_period ** (-i / (dim/2)), i < dim/2. `values: [B] -> [B, dim]`.

    Frequencies span 1 to 1/max_period radians per unit: log-SNR lives in roughly [-20, 20], so the finest
    feature resolves about one unit of log-SNR and the coarsest varies slowly over the whole range.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal embedding dim={dim} must be even")
    half = dim // 2
    frequencies = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = values.astype(jnp.float32)[:, None] * frequencies[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def masked_mean(text_embeddings: jax.Array, text_mask: jax.Array) -> jax.Array:
    """Mean over real tokens; zeros for an all-False mask (null text). `[B, L, D], [B, L] -> [B, D]`."""
    weights = text_mask.astype(jnp.float32)[..., None]
    total = jnp.sum(text_embeddings.astype(jnp.float32) * weights, axis=1)
    return total / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


class EmbeddingMLP(nn.Module):
    """Dense-SiLU-Dense on a sinusoidal embedding. `[B] -> [B, E]`."""

    embed_dim: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, values: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = dense_layer(self.embed_dim, name="dense_0", **kw)(sinusoidal_embedding(values, self.embed_dim))
        # Both kernels (embed, mlp): an output dim on the fsdp axis while the batch is also on fsdp is
        # miscompiled by XLA:CPU with jax 0.10.2 (wrong rows at mesh data=2, fsdp=2, tensor=2).
        return dense_layer(self.embed_dim, name="dense_1", **kw)(nn.silu(h))


class ConditioningEmbedding(nn.Module):
    """Builds `cond: [B, E]` = MLP(logsnr) + Dense(masked-mean text) [+ MLP(noise_aug_logsnr)] and,
    when cross-attention is used, `text_tokens: [B, L, E]` = LayerNorm(Dense(text_embeddings)).
    """

    embed_dim: int
    text_tokens: bool
    noise_augmentation: bool
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, logsnr: jax.Array, text_embeddings: jax.Array, text_mask: jax.Array,
                 noise_aug_logsnr: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        cond = EmbeddingMLP(self.embed_dim, name="logsnr_mlp", **kw)(logsnr)
        pooled = masked_mean(text_embeddings, text_mask)
        cond = cond + dense_layer(self.embed_dim, name="text_pool", **kw)(pooled)
        if self.noise_augmentation:
            cond = cond + EmbeddingMLP(self.embed_dim, name="noise_aug_mlp", **kw)(noise_aug_logsnr)
        cond = constrain_activation(cond, ("activation_batch", "activation_embed"))
        if not self.text_tokens:
            return cond, None
        tokens = dense_layer(self.embed_dim, name="text_projection", **kw)(text_embeddings.astype(self.dtype))
        tokens = layer_norm(name="text_norm", **kw)(tokens)
        return cond, constrain_activation(tokens, TOKEN_AXES)
