"""DeepFloyd IF U-Nets (stage I 64x64 base, stage II 64 -> 256 SR) in Flax, and their inflation into a
STUNet / SSR with our temporal modules (models/temporal.py).

Call, as our UNet's (docs/ARCHITECTURE.md) but in IF's terms:
  `IFUNet(config).apply(variables, x, timesteps, text_embeddings, text_mask, low_res=None, noise_level=None,
   train=False)` with `x: [B, H, W, 3]` or `[B, T, H, W, 3]`, `timesteps: [B]` IF's discrete timesteps (0..999,
  float allowed), `text_embeddings: [B, L, 4096]` T5-XXL outputs, `text_mask: [B, L]` (False keys are masked in
  the attention, as diffusers' `encoder_attention_mask`; IF's own pipeline passes all True), stage II:
  `low_res: [B, (T,) 64, 64, 3]` (already noise-augmented) and `noise_level: [B]` its augmentation timestep.
  Returns `[B, (T,) H, W, 6]` float32: epsilon (channels 0..2) and the learned-range variance interpolation
  (3..5), see diffusion/discrete.py.

What IF does differently from our U-Net (diffusers' UNet2DConditionModel with IF's config):
  - conditioning = MLP(sinusoid(t)) + LayerNorm(Dense(attention-pool(LayerNorm(text)))) [+ MLP(sinusoid(noise
    level))], GELU (exact) everywhere; residual blocks apply scale-shift of GroupNorm (eps 1e-5).
  - resampling is a residual block with 2x2 average pooling / nearest upsampling inside it.
  - one attention per block: queries from the image, keys/values from the group-normalised projected text
    tokens followed by the image tokens.
  - stage II concatenates the low-res image, upsampled bilinearly with aligned corners (IF's pipeline), to x.

Parameter paths (stable: the converter, inflation and trainable masks use them). Levels l = 0..n-1:
  conditioning/{timestep_mlp/{dense_0,dense_1}, text_pool/{norm_0, attention_pool/{query,key,value,position},
                projection, norm_1}, [noise_level_mlp/{dense_0,dense_1}]}
  text_projection, input_conv
  down_{l}_res_{i}/{norm_0, conv_0, conditioning, norm_1, conv_1, [skip]}
  down_{l}_attention_{i}/{norm, text_norm, query, key, value, text_key, text_value, output}   (l in attention_levels)
  down_{l}_downsample/{resblock}                                                              (l < n-1)
  middle_res_0, middle_attention_0, middle_res_1
  up_{l}_res_{i}, up_{l}_attention_{i} (i <= layers_per_block[l]), up_{l}_upsample (l > 0)
  output_norm, output_conv
Temporal additions (every name contains "temporal"), as in models/unet.py: `{down_l,up_l}_temporal_conv_{i}`
(l < n-1), `{down_{n-1},middle,up_{n-1}}_temporal_attention_{i}_{j}`, `down_l_temporal_downsample`,
`up_l_temporal_upsample` (resampling only). In the middle, temporal block 0 follows res_0 + attention_0 and
temporal block 1 follows res_1.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lumiere_jax.models.attention import dot_product_attention
from lumiere_jax.models.conditioning import sinusoidal_embedding
from lumiere_jax.models.dropout import Dropout
from lumiere_jax.models.if_config import NORM_EPSILON, TEXT_NORM_GROUPS, IFUNetConfig
from lumiere_jax.models.layers import (Dtype, TOKEN_AXES, constrain_image, conv_layer, dense_layer, group_norm,
                                       layer_norm)
from lumiere_jax.models.temporal import (SpaceTimeConvBlock, TemporalAttentionBlock, TemporalDownsample,
                                         TemporalUpsample, batch_to_frames, frames_to_batch)
from lumiere_jax.models.unet import clip_frames, frames_per_level


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, as torch's nn.GELU; jax's default is the tanh approximation."""
    return nn.gelu(x, approximate=False)


def timestep_embedding(timesteps: jax.Array, dim: int) -> jax.Array:
    """IF's sinusoid [cos(t f_i), sin(t f_i)], f_i = 10000^(-i / (dim/2)) (diffusers flip_sin_to_cos=True).
    `[B] -> [B, dim]`."""
    embedding = sinusoidal_embedding(timesteps, dim, max_period=10_000.0)  # [sin, cos]
    return jnp.concatenate([embedding[:, dim // 2:], embedding[:, :dim // 2]], axis=-1)


def upsample_aligned_corners(images: jax.Array, size: int) -> jax.Array:
    """Bilinear resize with aligned corners (torch `align_corners=True`, IF's SR pipeline). `[N, h, w, C] ->
    [N, size, size, C]`: output pixel i samples input coordinate i * (h - 1) / (size - 1)."""
    def resize_axis(x: jax.Array, axis: int) -> jax.Array:
        length = x.shape[axis]
        coordinates = jnp.linspace(0.0, length - 1.0, size)
        low = jnp.clip(jnp.floor(coordinates).astype(jnp.int32), 0, length - 1)
        high = jnp.clip(low + 1, 0, length - 1)
        weight_shape = [1] * x.ndim
        weight_shape[axis] = size
        weight = (coordinates - low).reshape(weight_shape).astype(x.dtype)
        return jnp.take(x, low, axis=axis) * (1 - weight) + jnp.take(x, high, axis=axis) * weight
    return resize_axis(resize_axis(images, 1), 2)


class EmbeddingMLP(nn.Module):
    """Dense-GELU-Dense on IF's sinusoid of a timestep (diffusers TimestepEmbedding). `[B] -> [B, E]`."""

    sinusoid_dim: int
    embed_dim: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, timesteps: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = dense_layer(self.embed_dim, name="dense_0", **kw)(timestep_embedding(timesteps, self.sinusoid_dim))
        return dense_layer(self.embed_dim, name="dense_1", **kw)(gelu(h))


class AttentionPool(nn.Module):
    """IF's attention pooling: a query token (the mean token plus a learned position) attends over itself and the
    tokens; its output is the pooled text. `[B, L, D] -> [B, D]`."""

    num_heads: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        batch, _, width = tokens.shape
        init = nn.with_logical_partitioning(nn.initializers.normal(width ** -0.5), ("embed",))
        position = self.param("position", init, (width,), self.param_dtype)
        pooled_token = jnp.mean(tokens, axis=1, keepdims=True) + position.astype(tokens.dtype)  # [B, 1, D]
        sequence = jnp.concatenate([pooled_token, tokens], axis=1)  # [B, 1 + L, D]

        def heads(name: str, x: jax.Array) -> jax.Array:  # [B, L', D] -> [B, L', N, D/N]
            projected = dense_layer(width, name=name, axes=("embed", "heads"), **kw)(x)
            return projected.reshape(batch, -1, self.num_heads, width // self.num_heads)

        pooled = dot_product_attention(heads("query", pooled_token), heads("key", sequence), heads("value", sequence))
        return pooled.reshape(batch, width)


class IFConditioning(nn.Module):
    """`cond: [B, E]` from the timestep, the attention-pooled text and (stage II) the noise level."""

    config: IFUNetConfig

    @nn.compact
    def __call__(self, timesteps: jax.Array, text_embeddings: jax.Array,
                 noise_level: jax.Array | None) -> jax.Array:
        config = self.config
        kw = dict(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype))
        sinusoid_dim = config.block_channels[0]
        cond = EmbeddingMLP(sinusoid_dim, config.embed_dim, name="timestep_mlp", **kw)(timesteps)
        if config.noise_level_conditioning:
            cond = cond + EmbeddingMLP(sinusoid_dim, config.embed_dim, name="noise_level_mlp", **kw)(noise_level)
        text_pool = _TextPool(config.pooling_heads, config.embed_dim, name="text_pool", **kw)
        cond = cond + text_pool(text_embeddings.astype(kw["dtype"]))
        return nn.with_logical_constraint(cond, ("activation_batch", "activation_embed"))


class _TextPool(nn.Module):
    """LayerNorm, attention pooling, Dense to E, LayerNorm (diffusers TextTimeEmbedding). `[B, L, D] -> [B, E]`."""

    num_heads: int
    embed_dim: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, text_embeddings: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = layer_norm(name="norm_0", epsilon=NORM_EPSILON, **kw)(text_embeddings)
        h = AttentionPool(self.num_heads, name="attention_pool", **kw)(h)
        h = dense_layer(self.embed_dim, name="projection", **kw)(h)
        return layer_norm(name="norm_1", epsilon=NORM_EPSILON, **kw)(h)


class IFResBlock(nn.Module):
    """GroupNorm-GELU-[resample]-conv, scale-shift of the second GroupNorm by Dense(GELU(cond)), GELU-dropout-conv,
    plus a (resampled, 1x1-conv'd if widths differ) skip. `resample`: None, "down" (2x2 average pool) or "up"
    (nearest x2), applied to the normalised activations and to the skip. `[N, H, W, C_in], [N, E] -> [N, H', W', F]`.
    """

    features: int
    norm_groups: int
    dropout_rate: float
    deterministic: bool
    resample: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _resample(self, x: jax.Array) -> jax.Array:
        if self.resample == "down":
            return nn.avg_pool(x, (2, 2), strides=(2, 2))
        if self.resample == "up":
            return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return x

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        norm = dict(epsilon=NORM_EPSILON, **kw)
        h = gelu(group_norm(self.norm_groups, name="norm_0", **norm)(x))
        skip, h = self._resample(x), self._resample(h)
        h = conv_layer(self.features, (3, 3), name="conv_0", **kw)(h)
        scale_shift = dense_layer(2 * self.features, name="conditioning", **kw)(gelu(cond))
        scale, shift = jnp.split(scale_shift[:, None, None, :], 2, axis=-1)
        h = group_norm(self.norm_groups, name="norm_1", **norm)(h) * (1 + scale) + shift
        h = Dropout(self.dropout_rate, deterministic=self.deterministic)(gelu(h))
        h = conv_layer(self.features, (3, 3), name="conv_1", **kw)(h)
        if skip.shape[-1] != self.features:
            skip = conv_layer(self.features, (1, 1), name="skip", **kw)(skip)
        return constrain_image(skip + h)


class IFAttention(nn.Module):
    """Residual attention of the image tokens over [text tokens, image tokens] (diffusers' added-KV attention).

    `x: [B*T, H, W, C]` (T = 1 for images), `text_tokens: [B, L, D_text]` (projected), `text_mask: [B, L]`.
    A clip's frames share its text: text keys and values are computed once per clip and repeated per frame.
    """

    num_heads: int
    norm_groups: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, text_tokens: jax.Array, text_mask: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        frames, height, width, channels = x.shape
        frames_per_clip = frames // text_tokens.shape[0]
        head_dim = channels // self.num_heads

        def heads(name: str, tokens: jax.Array) -> jax.Array:  # [N, L, C'] -> [N, L, heads, head_dim]
            projected = dense_layer(channels, name=name, axes=("embed", "heads"), **kw)(tokens)
            return projected.reshape(tokens.shape[:2] + (self.num_heads, head_dim))

        def per_frame(clip_tensor: jax.Array) -> jax.Array:
            return jnp.repeat(clip_tensor, frames_per_clip, axis=0)

        image = group_norm(self.norm_groups, name="norm", epsilon=NORM_EPSILON, **kw)(x)
        image = image.reshape(frames, height * width, channels)
        text = group_norm(TEXT_NORM_GROUPS, name="text_norm", epsilon=NORM_EPSILON, **kw)(text_tokens)
        key = jnp.concatenate([per_frame(heads("text_key", text)), heads("key", image)], axis=1)
        value = jnp.concatenate([per_frame(heads("text_value", text)), heads("value", image)], axis=1)
        mask = jnp.concatenate([per_frame(text_mask), jnp.ones((frames, height * width), bool)], axis=1)
        attended = dot_product_attention(heads("query", image), key, value, mask)  # [N, HW, heads, head_dim]
        attended = attended.reshape(frames, height * width, channels)
        output = dense_layer(channels, name="output", axes=("heads", "embed"), **kw)(attended)
        return constrain_image(x + output.reshape(x.shape))


def example_inputs(config: IFUNetConfig, batch_size: int = 1, video: bool | None = None) -> dict[str, jax.Array]:
    """Zero inputs of the shapes `config` is built for; video by default when the config is temporal."""
    video = config.temporal is not None if video is None else video
    if video and config.temporal is None:
        raise ValueError("video inputs need a config with temporal=TemporalConfig(...)")
    frames = (config.temporal.num_frames,) if video else ()
    inputs = dict(
        x=jnp.zeros((batch_size, *frames, config.image_size, config.image_size, 3), jnp.float32),
        timesteps=jnp.zeros((batch_size,), jnp.float32),
        text_embeddings=jnp.zeros((batch_size, config.text_length, config.text_embed_dim), jnp.float32),
        text_mask=jnp.ones((batch_size, config.text_length), bool),
    )
    if config.noise_level_conditioning:
        low = config.low_res_size
        inputs["low_res"] = jnp.zeros((batch_size, *frames, low, low, config.low_res_channels), jnp.float32)
        inputs["noise_level"] = jnp.zeros((batch_size,), jnp.float32)
    return inputs


def init_variables(config: IFUNetConfig, rng: jax.Array, batch_size: int = 1) -> dict:
    """Variables (boxed with logical axis names) of `IFUNet(config)`; wrap in `jax.eval_shape` to allocate nothing."""
    return IFUNet(config).init(rng, **example_inputs(config, batch_size))


class IFUNet(nn.Module):
    """The IF U-Net; with `config.temporal` the inflated space-time version (STUNet from stage I, SSR from II)."""

    config: IFUNetConfig

    def _check_inputs(self, x, low_res, noise_level) -> int | None:
        config = self.config
        if x.ndim not in (4, 5) or x.shape[-1] != 3:
            raise ValueError(f"x must be [B, H, W, 3] or [B, T, H, W, 3], got shape {x.shape}")
        if config.noise_level_conditioning and (low_res is None or noise_level is None):
            raise ValueError("a stage II IF config needs low_res and noise_level")
        if not config.noise_level_conditioning and low_res is not None:
            raise ValueError("low_res given to a stage I IF config (noise_level_conditioning=False)")
        return clip_frames(x, config.temporal)

    @nn.compact
    def __call__(self, x: jax.Array, timesteps: jax.Array, text_embeddings: jax.Array, text_mask: jax.Array,
                 low_res: jax.Array | None = None, noise_level: jax.Array | None = None,
                 train: bool = False) -> jax.Array:
        config = self.config
        kw = dict(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype))
        num_frames = self._check_inputs(x, low_res, noise_level)
        video = num_frames is not None
        batch = x.shape[0]
        num_levels = len(config.block_channels)
        coarsest = num_levels - 1
        level_frames = frames_per_level(config, num_frames) if video else (1,) * num_levels
        resample_time = video and config.temporal.resampling

        cond = IFConditioning(config, name="conditioning")(timesteps, text_embeddings, noise_level)
        level_cond = [jnp.repeat(cond, frames, axis=0) for frames in level_frames]  # [B * T_level, E]
        text_tokens = dense_layer(config.cross_attention_dim, name="text_projection", **kw)(
            text_embeddings.astype(kw["dtype"]))
        text_tokens = nn.with_logical_constraint(text_tokens, TOKEN_AXES)

        h = frames_to_batch(x) if video else x  # [B*T, H, W, 3]
        if config.noise_level_conditioning:
            small = frames_to_batch(low_res) if video else low_res
            h = jnp.concatenate([h, upsample_aligned_corners(small, h.shape[1])], axis=-1)
        h = conv_layer(config.block_channels[0], (3, 3), in_axis=None, name="input_conv", **kw)(h.astype(kw["dtype"]))

        res_block = nn.remat(IFResBlock) if config.remat else IFResBlock
        attention = nn.remat(IFAttention) if config.remat else IFAttention
        space_time_conv = nn.remat(SpaceTimeConvBlock) if config.remat else SpaceTimeConvBlock
        temporal_attention = nn.remat(TemporalAttentionBlock) if config.remat else TemporalAttentionBlock

        def res(h, name: str, level: int, resample: str | None = None):
            return res_block(config.block_channels[level], config.norm_groups, config.dropout_rate,
                             deterministic=not train, resample=resample, name=name, **kw)(h, level_cond[level])

        def attend(h, name: str, level: int):
            heads = config.block_channels[level] // config.attention_head_dim
            return attention(heads, config.norm_groups, name=name, **kw)(h, text_tokens, text_mask)

        def temporal_block(h, prefix: str, level: int, index: int):
            """Paper Fig. 4: (2+1)D conv after pretrained blocks above the coarsest level, stacked attention at it."""
            if not video:
                return h
            temporal = config.temporal
            clip = batch_to_frames(h, batch)
            if level == coarsest:
                for j in range(temporal.attention_blocks):
                    clip = temporal_attention(temporal.attention_heads,
                                              name=f"{prefix}_temporal_attention_{index}_{j}", **kw)(clip)
            else:
                clip = space_time_conv(config.norm_groups, temporal.spatial_kernel_size, temporal.conv_kernel_size,
                                       name=f"{prefix}_temporal_conv_{index}", **kw)(clip)
            return frames_to_batch(clip)

        def block(h, prefix: str, level: int, index: int):
            h = res(h, f"{prefix}_res_{index}", level)
            if level in config.attention_levels:
                h = attend(h, f"{prefix}_attention_{index}", level)
            return temporal_block(h, prefix, level, index)

        skips = [h]
        for level in range(num_levels):
            for index in range(config.layers_per_block[level]):
                h = block(h, f"down_{level}", level, index)
                skips.append(h)
            if level < coarsest:
                h = res(h, f"down_{level}_downsample", level, resample="down")
                if resample_time:
                    clip = TemporalDownsample(name=f"down_{level}_temporal_downsample", **kw)(batch_to_frames(h, batch))
                    h = frames_to_batch(clip)
                skips.append(h)

        h = res(h, "middle_res_0", coarsest)
        h = temporal_block(attend(h, "middle_attention_0", coarsest), "middle", coarsest, 0)
        h = temporal_block(res(h, "middle_res_1", coarsest), "middle", coarsest, 1)

        for level in reversed(range(num_levels)):
            for index in range(config.layers_per_block[level] + 1):
                h = block(jnp.concatenate([h, skips.pop()], axis=-1), f"up_{level}", level, index)
            if level > 0:
                h = res(h, f"up_{level}_upsample", level, resample="up")
                if resample_time:
                    clip = TemporalUpsample(name=f"up_{level}_temporal_upsample", **kw)(batch_to_frames(h, batch))
                    h = frames_to_batch(clip)

        h = gelu(group_norm(config.norm_groups, name="output_norm", epsilon=NORM_EPSILON, **kw)(h))
        h = conv_layer(config.out_channels, (3, 3), out_axis=None, name="output_conv", **kw)(h)
        h = h.astype(jnp.float32)
        return batch_to_frames(h, batch) if video else h
