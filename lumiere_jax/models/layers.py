"""Spatial building blocks of the U-Net: layer factories with logical axis names, residual block,
resamplers and multi-head (self / cross) attention. All act on frames: `x: [N, H, W, C]`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lumiere_jax.models.attention import dot_product_attention
from lumiere_jax.models.dropout import Dropout
from lumiere_jax.parallel.mesh import constrain_activation

Dtype = Any
Initializer = Callable[..., jax.Array]

# N = B (images) or B*T (a clip's frames folded into the batch).
IMAGE_AXES = ("activation_batch", "activation_height", "activation_width", "activation_channels")
TOKEN_AXES = ("activation_batch", "activation_length", "activation_embed")  # text tokens
# Attention outputs [rows, queries, C]: rows are frames (spatial), pixels (temporal) or clips (cross-attention).
QUERY_AXES = ("activation_batch", "activation_queries", "activation_embed")
DEFAULT_KERNEL_INIT = nn.initializers.lecun_normal()


def constrain_image(x: jax.Array) -> jax.Array:
    """Block-boundary sharding constraint for `x: [N, H, W, C]`."""
    return constrain_activation(x, IMAGE_AXES)


def conv_layer(features: int, kernel_size: tuple[int, ...], *, name: str, dtype: Dtype, param_dtype: Dtype,
               strides: int = 1, padding: str | tuple = "SAME", in_axis: str | None = "conv_in",
               out_axis: str | None = "conv_out", kernel_init: Initializer = DEFAULT_KERNEL_INIT) -> nn.Conv:
    """A convolution whose kernel is named (conv_kernel, None, ..., in_axis, out_axis).

    Only the first tap axis carries `conv_kernel` (flax rejects a name repeated within one array; tap axes
    are never sharded). `in_axis` / `out_axis` = None for the 3/7-channel image ends, which no mesh axis
    divides.
    """
    kernel_axes = ("conv_kernel",) + (None,) * (len(kernel_size) - 1) + (in_axis, out_axis)
    return nn.Conv(features, kernel_size, strides=strides, padding=padding, dtype=dtype, param_dtype=param_dtype,
                   kernel_init=nn.with_logical_partitioning(kernel_init, kernel_axes),
                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (out_axis,)), name=name)


def dense_layer(features: int, *, name: str, dtype: Dtype, param_dtype: Dtype,
                axes: tuple[str | None, str | None] = ("embed", "mlp"),
                kernel_init: Initializer = DEFAULT_KERNEL_INIT) -> nn.Dense:
    return nn.Dense(features, dtype=dtype, param_dtype=param_dtype,
                    kernel_init=nn.with_logical_partitioning(kernel_init, axes),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)), name=name)


class GroupNorm(nn.Module):
    """Group normalisation of `x: [N, ..., C]` over the middle axes and the channels of each of `groups` groups,
    with a per-channel scale and bias: `nn.GroupNorm`'s parameters (`scale`, `bias`: [C]), epsilon (1e-6) and
    float32 statistics (E[x^2] - E[x]^2), and its output up to float32 rounding.

    Faster on CPU: the statistics are per-channel sums over the middle axes (a contiguous reduction) then sums
    within groups of the small `[N, C]` result (`nn.GroupNorm` reduces a `[N, ..., G, C/G]` view, which XLA:CPU
    runs several times slower), and the normalisation is one multiply-add with per-(example, channel) factors.
    """

    groups: int
    epsilon: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        if channels % self.groups:
            raise ValueError(f"{self.groups} groups do not divide {channels} channels; choose a divisor of {channels}")
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)), (channels,),
                           self.param_dtype)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)), (channels,),
                          self.param_dtype)
        values = x.astype(jnp.float32)
        middle = tuple(range(1, x.ndim - 1))
        count = channels // self.groups * (x.size // (x.shape[0] * channels))  # elements per (example, group)

        def group_mean(per_channel_sums: jax.Array) -> jax.Array:  # [N, C] -> [N, G, 1]
            return per_channel_sums.reshape(x.shape[0], self.groups, -1).sum(-1, keepdims=True) / count

        mean = group_mean(values.sum(middle))
        variance = jnp.maximum(group_mean(jnp.square(values).sum(middle)) - jnp.square(mean), 0.0)
        factor = jax.lax.rsqrt(variance + self.epsilon) * scale.astype(jnp.float32).reshape(self.groups, -1)
        offset = bias.astype(jnp.float32).reshape(self.groups, -1) - mean * factor  # [N, G, C/G]
        broadcast = (x.shape[0],) + (1,) * len(middle) + (channels,)
        return (values * factor.reshape(broadcast) + offset.reshape(broadcast)).astype(self.dtype)


def group_norm(groups: int, *, name: str, dtype: Dtype, param_dtype: Dtype, epsilon: float = 1e-6) -> GroupNorm:
    return GroupNorm(groups, epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, name=name)


def layer_norm(*, name: str, dtype: Dtype, param_dtype: Dtype, epsilon: float = 1e-6) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=epsilon, dtype=dtype, param_dtype=param_dtype,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)), name=name)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, conditioning scale-shift, GroupNorm-SiLU-dropout-conv, plus a skip (1x1 conv
    if the widths differ).

    `x: [N, H, W, C_in], cond: [N, E] -> [N, H, W, features]`.
    """

    features: int
    norm_groups: int
    dropout_rate: float
    deterministic: bool
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = nn.silu(group_norm(self.norm_groups, name="norm_0", **kw)(x))
        h = conv_layer(self.features, (3, 3), name="conv_0", **kw)(h)
        scale_shift = dense_layer(2 * self.features, name="conditioning", **kw)(nn.silu(cond))
        scale, shift = jnp.split(scale_shift[:, None, None, :], 2, axis=-1)
        h = group_norm(self.norm_groups, name="norm_1", **kw)(h) * (1 + scale) + shift
        h = Dropout(self.dropout_rate, deterministic=self.deterministic)(nn.silu(h))
        h = conv_layer(self.features, (3, 3), name="conv_1", **kw)(h)
        skip = x if x.shape[-1] == self.features else conv_layer(self.features, (1, 1), name="skip", **kw)(x)
        return constrain_image(skip + h)


class Downsample(nn.Module):
    """Halves H and W with a stride-2 3x3 conv. `[N, H, W, C] -> [N, H/2, W/2, C]`."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = conv_layer(x.shape[-1], (3, 3), strides=2, padding=((1, 1), (1, 1)), name="conv",
                          dtype=self.dtype, param_dtype=self.param_dtype)
        return constrain_image(conv(x))


class Upsample(nn.Module):
    """Doubles H and W: nearest-neighbour repeat then a 3x3 conv (transposed convs are slow on CPU)."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        conv = conv_layer(x.shape[-1], (3, 3), name="conv", dtype=self.dtype, param_dtype=self.param_dtype)
        return constrain_image(conv(h))


def _zero_or_default(zero: bool) -> Initializer:
    return nn.initializers.zeros if zero else DEFAULT_KERNEL_INIT


class MultiHeadAttention(nn.Module):
    """Multi-head attention of `inputs: [B, Lq, C]` over `context: [B, Lk, Ck]`, output width C.

    `null_token=True` prepends a learned, always-visible key/value (cross-attention: a row with an all-False
    text mask, i.e. null text for classifier-free guidance, attends to it alone instead of softmaxing nothing).
    `zero_init_output=True` makes the block output zero at init (residual temporal blocks start as identity).
    """

    num_heads: int
    null_token: bool = False
    zero_init_output: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, inputs: jax.Array, context: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        width = inputs.shape[-1]
        head_dim = width // self.num_heads

        # Fused [C, heads*D] kernels (plain Dense): flax's DenseGeneral re-runs its initializer on a flattened
        # kernel under active axis rules and fails the logical constraint there.
        def project(name: str, tokens: jax.Array) -> jax.Array:  # [B, L, C'] -> [B, L, N, D]
            projected = dense_layer(width, name=name, axes=("embed", "heads"), **kw)(tokens)
            return projected.reshape(tokens.shape[:2] + (self.num_heads, head_dim))

        query = project("query", inputs)
        key = project("key", context)
        value = project("value", context)
        if self.null_token:
            batch = inputs.shape[0]
            null_shape = (batch, 1, self.num_heads, head_dim)
            init = nn.with_logical_partitioning(nn.initializers.normal(1.0), ("heads", "kv"))
            null_key = self.param("null_key", init, (self.num_heads, head_dim), self.param_dtype)
            null_value = self.param("null_value", init, (self.num_heads, head_dim), self.param_dtype)
            key = jnp.concatenate([jnp.broadcast_to(null_key.astype(key.dtype), null_shape), key], axis=1)
            value = jnp.concatenate([jnp.broadcast_to(null_value.astype(value.dtype), null_shape), value], axis=1)
            visible = jnp.ones((batch, 1), dtype=bool)
            mask = jnp.concatenate([visible, mask], axis=1) if mask is not None else None
        attended = dot_product_attention(query, key, value, mask)  # [B, Lq, N, D]
        attended = attended.reshape(attended.shape[:2] + (width,))
        output = dense_layer(width, name="output", axes=("heads", "embed"),
                             kernel_init=_zero_or_default(self.zero_init_output), **kw)
        return constrain_activation(output(attended), QUERY_AXES)


class SelfAttentionBlock(nn.Module):
    """Residual spatial self-attention over the H*W positions of each frame. `[N, H, W, C] -> same`."""

    num_heads: int
    norm_groups: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        n, height, width, channels = x.shape
        tokens = group_norm(self.norm_groups, name="norm", **kw)(x).reshape(n, height * width, channels)
        attended = MultiHeadAttention(self.num_heads, name="attention", **kw)(tokens, tokens)
        return constrain_image(x + attended.reshape(x.shape))


class CrossAttentionBlock(nn.Module):
    """Residual cross-attention from pixels to text tokens.

    `x: [B*T, H, W, C]` (T = 1 for images), `text_tokens: [B, L, E]`, `text_mask: [B, L]`. The T frames of a
    clip share the clip's text, so queries are regrouped to `[B, T*H*W, C]` rather than copying the text T times.
    `zero_init_output=True`: the block is the identity at init (a new temporal block).
    """

    num_heads: int
    norm_groups: int
    zero_init_output: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, text_tokens: jax.Array, text_mask: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        batch = text_tokens.shape[0]
        channels = x.shape[-1]
        queries = group_norm(self.norm_groups, name="norm", **kw)(x).reshape(batch, -1, channels)
        attention = MultiHeadAttention(self.num_heads, null_token=True, zero_init_output=self.zero_init_output,
                                       name="attention", **kw)
        attended = attention(queries, text_tokens, text_mask)
        return constrain_image(x + attended.reshape(x.shape))
