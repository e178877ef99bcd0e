"""The frozen T5 v1.1 text encoder (Imagen conditions on frozen T5-XXL token embeddings; PAPER.md 6).

Architecture as T5 v1.1 / ByT5: token embedding, pre-norm blocks of self-attention and a gated-GELU MLP,
RMS norms without mean subtraction or bias, a relative position bias computed once (first layer) and shared
by every layer, no 1/sqrt(d_kv) attention scaling (T5 folds it into the initialisation), no dropout.

Parameter paths (stable; `t5_weights.py` maps Hugging Face checkpoints onto them):
  token_embedding/embedding                [vocab, embed]
  relative_position_bias/embedding         [relpos_buckets, heads]
  block_{i}/attention_norm/scale           [norm]
  block_{i}/attention/{query,key,value}/kernel   [embed, heads, kv]
  block_{i}/attention/out/kernel           [heads, kv, embed]
  block_{i}/mlp_norm/scale                 [norm]
  block_{i}/mlp/{wi_0,wi_1}/kernel         [embed, mlp]
  block_{i}/mlp/wo/kernel                  [mlp, embed]
  final_norm/scale                         [norm]
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lumiere_jax.parallel.mesh import constrain_activation

Params = Any  # nested dict of arrays: the 'params' collection without its outer key
ACTIVATION_AXES = ("activation_batch", "activation_length", "activation_embed")


@dataclasses.dataclass(frozen=True)
class T5EncoderConfig:
    """Sizes of a T5 v1.1 encoder; field names follow the Hugging Face `config.json`."""

    vocab_size: int = 32128
    d_model: int = 4096
    d_kv: int = 64
    d_ff: int = 10240
    num_layers: int = 24
    num_heads: int = 64
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    dtype: str = "float32"  # activation dtype ("bfloat16" on TPU); parameters stay float32 unless loaded otherwise


PRESETS: dict[str, T5EncoderConfig] = {
    # Random weights: tests and runs written before the caption encoder. Vocabulary covers ByT5's byte ids.
    "tiny": T5EncoderConfig(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
    # The CPU runs' encoder: the shipped "synthetic_captions" word vocabulary (34 ids, room for 64) and weights
    # pre-trained on the synthetic captions (t5_weights.CAPTION_ENCODER; train/caption_encoder.py).
    "tiny_words": T5EncoderConfig(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
    # google/byt5-small (encoder side).
    "byt5_small": T5EncoderConfig(vocab_size=384, d_model=1472, d_kv=64, d_ff=3584, num_layers=12, num_heads=6),
    # google/t5-v1_1-xxl, the encoder Imagen uses.
    "t5_v1_1_xxl": T5EncoderConfig(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64),
}


def get_config(name: str, **overrides) -> T5EncoderConfig:
    """Returns a preset (`tiny`, `tiny_words`, `byt5_small`, `t5_v1_1_xxl`) with optional field overrides (e.g.
    dtype)."""
    if name not in PRESETS:
        raise ValueError(f"unknown T5 encoder preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


def relative_position_bucket(
    relative_position: jnp.ndarray, num_buckets: int, max_distance: int,
) -> jnp.ndarray:
    """Maps `key_position - query_position` to a bidirectional T5 bucket id in [0, num_buckets).

    Half the buckets are for keys after the query. Within each half, distances below `num_buckets / 4`
    get a bucket each; larger distances share logarithmically wider buckets up to `max_distance`, beyond
    which all distances fall in the last bucket.
    """
    half = num_buckets // 2
    direction_offset = jnp.where(relative_position > 0, half, 0)
    distance = jnp.abs(relative_position)
    max_exact = half // 2
    # Clamp to 1 before the log: the large branch is only selected for distance >= max_exact.
    log_ratio = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact) / np.log(max_distance / max_exact)
    large_bucket = max_exact + (log_ratio * (half - max_exact)).astype(jnp.int32)
    large_bucket = jnp.minimum(large_bucket, half - 1)
    return direction_offset + jnp.where(distance < max_exact, distance, large_bucket)


class RMSNorm(nn.Module):
    """T5 layer norm: scale * x / sqrt(mean(x^2) + eps), computed in float32; no mean subtraction, no bias."""

    epsilon: float
    dtype: Any

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                           (x.shape[-1],), jnp.float32)
        x = x.astype(jnp.float32)
        x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.epsilon)
        return (x * scale.astype(jnp.float32)).astype(self.dtype)


class RelativePositionBias(nn.Module):
    """Learned per-head bias indexed by relative position bucket; returns `bias: [1, heads, L, L]`."""

    config: T5EncoderConfig

    @nn.compact
    def __call__(self, length: int) -> jnp.ndarray:
        cfg = self.config
        table = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(cfg.d_model ** -0.5), ("relpos_buckets", "heads")),
            (cfg.relative_attention_num_buckets, cfg.num_heads), jnp.float32)
        positions = jnp.arange(length)
        buckets = relative_position_bucket(
            positions[None, :] - positions[:, None],  # [L_query, L_key]
            cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance)
        bias = jnp.take(table, buckets, axis=0)  # [L_query, L_key, heads]
        return jnp.transpose(bias, (2, 0, 1))[None]


class HeadProjection(nn.Module):
    """Bias-free linear map `einsum(equation, x, kernel)` with a multi-axis kernel (heads kept separate).

    Written out because `nn.DenseGeneral` initialises a flattened kernel, which clashes with its logical
    axis names under a mesh.
    """

    equation: str
    kernel_shape: tuple[int, ...]
    kernel_axes: tuple[str, ...]
    stddev: float
    dtype: Any

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        init = nn.with_logical_partitioning(nn.initializers.normal(self.stddev), self.kernel_axes)
        kernel = self.param("kernel", init, self.kernel_shape, jnp.float32)
        return jnp.einsum(self.equation, x.astype(self.dtype), kernel.astype(self.dtype))


class SelfAttention(nn.Module):
    """Bidirectional multi-head self-attention with an additive position bias and a key padding mask.

    Written as plain einsums rather than `jax.nn.dot_product_attention`: the [heads, L, L] bias is dense
    anyway, text is short (L <= a few hundred), and this keeps T5's unscaled logits explicit.
    """

    config: T5EncoderConfig

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, position_bias: jnp.ndarray) -> jnp.ndarray:
        """x: [B, L, D]; mask: [B, L] bool (True = real token); position_bias: [1, H, L, L] -> [B, L, D]."""
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        in_shape = (cfg.d_model, cfg.num_heads, cfg.d_kv)
        in_axes = ("embed", "heads", "kv")

        # T5's init: query std (d_model * d_kv)^-1/2 stands in for the missing 1/sqrt(d_kv) logit scaling.
        query = HeadProjection("bld,dhk->blhk", in_shape, in_axes, (cfg.d_model * cfg.d_kv) ** -0.5, dtype,
                               name="query")(x)  # [B, L, H, d_kv]
        key = HeadProjection("bld,dhk->blhk", in_shape, in_axes, cfg.d_model ** -0.5, dtype, name="key")(x)
        value = HeadProjection("bld,dhk->blhk", in_shape, in_axes, cfg.d_model ** -0.5, dtype, name="value")(x)
        logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
        logits = logits + position_bias.astype(jnp.float32)
        logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1).astype(dtype)  # [B, H, L_query, L_key]
        attended = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
        return HeadProjection(
            "blhk,hkd->bld", (cfg.num_heads, cfg.d_kv, cfg.d_model), ("heads", "kv", "embed"),
            (cfg.num_heads * cfg.d_kv) ** -0.5, dtype, name="out")(attended)


class GatedGeluMLP(nn.Module):
    """T5 v1.1 feed-forward: wo(gelu_tanh(wi_0 x) * wi_1 x)."""

    config: T5EncoderConfig

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)

        def dense(name: str, features: int, fan_in: int, axes: tuple[str, str]) -> nn.Dense:
            init = nn.initializers.normal(fan_in ** -0.5)
            return nn.Dense(features, use_bias=False, dtype=dtype, name=name,
                            kernel_init=nn.with_logical_partitioning(init, axes))

        # Hugging Face's `gelu_new` is the tanh approximation.
        gate = jax.nn.gelu(dense("wi_0", cfg.d_ff, cfg.d_model, ("embed", "mlp"))(x), approximate=True)
        hidden = gate * dense("wi_1", cfg.d_ff, cfg.d_model, ("embed", "mlp"))(x)  # [B, L, d_ff]
        return dense("wo", cfg.d_model, cfg.d_ff, ("mlp", "embed"))(hidden)


class EncoderBlock(nn.Module):
    """Pre-norm residual block: x + attention(norm(x)), then x + mlp(norm(x))."""

    config: T5EncoderConfig

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, position_bias: jnp.ndarray) -> jnp.ndarray:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        normed = RMSNorm(cfg.layer_norm_epsilon, dtype, name="attention_norm")(x)
        x = x + SelfAttention(cfg, name="attention")(normed, mask, position_bias)
        normed = RMSNorm(cfg.layer_norm_epsilon, dtype, name="mlp_norm")(x)
        x = x + GatedGeluMLP(cfg, name="mlp")(normed)
        return constrain_activation(x, ACTIVATION_AXES)


class T5Encoder(nn.Module):
    """T5 v1.1 encoder: `tokens: int32 [B, L]`, `mask: bool [B, L]` -> `embeddings: [B, L, d_model]`.

    Outputs at padded positions (mask False) are computed like any other (as Hugging Face's encoder does) and
    carry no meaning; `TextEncoder.encode` zeroes them. Padded keys are excluded from attention.
    """

    config: T5EncoderConfig

    @nn.compact
    def __call__(self, tokens: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        x = nn.Embed(
            cfg.vocab_size, cfg.d_model, dtype=dtype, name="token_embedding",
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")))(tokens)
        x = constrain_activation(x, ACTIVATION_AXES)  # [B, L, D]
        position_bias = RelativePositionBias(cfg, name="relative_position_bias")(tokens.shape[1])
        for layer in range(cfg.num_layers):
            x = EncoderBlock(cfg, name=f"block_{layer}")(x, mask, position_bias)
        return RMSNorm(cfg.layer_norm_epsilon, dtype, name="final_norm")(x)


class TextEncoder:
    """Frozen encoder around `T5Encoder`: random init, logical partition specs, and a jitted `encode`."""

    def __init__(self, config: T5EncoderConfig):
        self.config = config
        self.module = T5Encoder(config)
        self._encode = jax.jit(functools.partial(_encode, self.module))

    def init(self, rng: jax.Array, length: int = 8) -> Params:
        """Random parameters (plain arrays, logical names stripped); real runs load them with t5_weights."""
        tokens = jnp.zeros((1, length), jnp.int32)
        variables = jax.jit(self.module.init)(rng, tokens, jnp.ones((1, length), bool))
        return nn.unbox(variables)["params"]

    def logical_partition_specs(self) -> Params:
        """Tree of PartitionSpecs over logical axis names, matching `init`'s tree (map with parallel.mesh)."""
        tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
        mask = jax.ShapeDtypeStruct((1, 1), jnp.bool_)
        abstract = jax.eval_shape(self.module.init, jax.random.key(0), tokens, mask)
        return nn.get_partition_spec(abstract)["params"]

    def encode(self, params: Params, tokens: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
        """tokens: int32 [B, L], mask: bool [B, L] -> embeddings [B, L, d_model], zero where mask is False.

        An all-False mask therefore yields all-zero embeddings, the null text of classifier-free guidance.
        """
        return self._encode(params, tokens, mask)


def _encode(module: T5Encoder, params: Params, tokens: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    params = jax.lax.stop_gradient(params)  # frozen (PAPER.md 6)
    mask = mask.astype(bool)
    embeddings = module.apply({"params": params}, tokens, mask)
    return jax.lax.stop_gradient(jnp.where(mask[..., None], embeddings, 0))
