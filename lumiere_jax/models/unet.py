"""The U-Net family in one module: T2I (Imagen-style), STUNet (paper section 2) and SSR, chosen by `UNetConfig`.

Call (docs/ARCHITECTURE.md):
  `UNet(config).apply(variables, x, logsnr, text_embeddings, text_mask, low_res=None, noise_aug_logsnr=None,
   train=False)` with `x: [B, H, W, C_in]` (image mode) or `[B, T, H, W, C_in]` (video mode) -> `[B, (T,) H, W,
   out_channels]` in float32. In video mode spatial layers fold frames into the batch; the text is shared by a
   clip's frames. Image mode on a STUNet config runs exactly the T2I network (temporal modules are skipped).

Parameter paths (stable: checkpoints, `inflate.py` and `trainable_mask` depend on them). Levels l = 0 (full
resolution) .. n-1 (coarsest); down blocks i < num_res_blocks, up blocks i <= num_res_blocks.

T2I network (every path also exists in STUNet / SSR):
  conditioning/{logsnr_mlp/{dense_0,dense_1}, text_pool, [noise_aug_mlp/{dense_0,dense_1}],
                [text_projection, text_norm]}         (text_* only with cross-attention levels; noise_aug_* SR only)
  input_conv
  down_{l}_res_{i}/{norm_0, conv_0, conditioning, norm_1, conv_1, [skip]}
  down_{l}_self_attention_{i}/{norm, attention/{query,key,value,output}}            (l in attention_levels)
  down_{l}_cross_attention_{i}/{norm, attention/{query,key,value,null_key,null_value,output}}
                                                                                     (l in cross_attention_levels)
  down_{l}_downsample/conv                                                           (l < n-1)
  middle_res_{0,1}, middle_self_attention_{0,1}, middle_cross_attention_{0,1}        (attention as level n-1)
  up_{l}_res_{i}, up_{l}_self_attention_{i}, up_{l}_cross_attention_{i}
  up_{l}_upsample/conv                                                               (l > 0)
  output_norm, output_conv

Temporal additions (video configs; every name contains "temporal"):
  {down_{l},up_{l}}_temporal_conv_{i}/{norm_0, spatial_conv, norm_1, temporal_conv}  (l < n-1)
  {down_{n-1},middle,up_{n-1}}_temporal_attention_{i}_{j}/{norm, attention/...}      (j < attention_blocks)
  down_{l}_temporal_downsample/conv (l < n-1), up_{l}_temporal_upsample/conv (l > 0)  (resampling=True only)
  {prefix}_temporal_cross_attention_{i}/{norm, attention/...}   (text_cross_attention=True, l in cross_attention_levels)
Each temporal block follows the pretrained block (res + attention) with the same prefix and index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from lumiere_jax.models.conditioning import ConditioningEmbedding
from lumiere_jax.models import remat as remat_lib
from lumiere_jax.models.config import UNetConfig
from lumiere_jax.models.layers import (CrossAttentionBlock, Downsample, ResBlock, SelfAttentionBlock, Upsample,
                                       conv_layer, group_norm)
from lumiere_jax.models.temporal import (SpaceTimeConvBlock, TemporalAttentionBlock, TemporalDownsample,
                                         TemporalUpsample, batch_to_frames, frames_to_batch)

if TYPE_CHECKING:
    from lumiere_jax.models.if_config import IFUNetConfig


def frames_per_level(config: UNetConfig | IFUNetConfig, num_frames: int) -> tuple[int, ...]:
    """Frames at each level for a clip of `num_frames`; raises if the temporal downsamples don't divide it."""
    downsamples = config.temporal_downsamples
    factor = 2 ** downsamples
    if num_frames % factor:
        raise ValueError(f"num_frames={num_frames} must be divisible by 2**{downsamples}={factor} for "
                         f"{downsamples} temporal downsamples; choose a multiple of {factor} frames or a config "
                         f"with fewer levels or temporal.resampling=False")
    return tuple(num_frames // 2 ** min(level, downsamples) for level in range(config.num_downsamples + 1))


def example_inputs(config: UNetConfig, batch_size: int = 1, video: bool | None = None) -> dict[str, jax.Array]:
    """Zero inputs of the shapes `config` is built for (for init and `jax.eval_shape`); video by default
    when the config is temporal."""
    video = config.temporal is not None if video is None else video
    if video and config.temporal is None:
        raise ValueError("video inputs need a config with temporal=TemporalConfig(...)")
    frames = (config.temporal.num_frames,) if video else ()
    size = config.image_size
    inputs = dict(
        x=jnp.zeros((batch_size, *frames, size, size, config.in_channels), jnp.float32),
        logsnr=jnp.zeros((batch_size,), jnp.float32),
        text_embeddings=jnp.zeros((batch_size, config.text_length, config.text_embed_dim), jnp.float32),
        text_mask=jnp.ones((batch_size, config.text_length), bool),
    )
    if config.low_res_channels:
        low = config.low_res_size
        inputs["low_res"] = jnp.zeros((batch_size, *frames, low, low, config.low_res_channels), jnp.float32)
        inputs["noise_aug_logsnr"] = jnp.zeros((batch_size,), jnp.float32)
    return inputs


def init_variables(config: UNetConfig, rng: jax.Array, batch_size: int = 1) -> dict:
    """Variables (boxed with logical axis names) of `UNet(config)`; wrap in `jax.eval_shape` to allocate nothing."""
    return UNet(config).init(rng, **example_inputs(config, batch_size))


def upsample_low_res(low_res: jax.Array, height: int, width: int) -> jax.Array:
    """Bilinear upsampling of the SR conditioning frames. `[..., h, w, C] -> [..., height, width, C]`."""
    return jax.image.resize(low_res, (*low_res.shape[:-3], height, width, low_res.shape[-1]), method="bilinear")


def clip_frames(x: jax.Array, temporal) -> int | None:
    """Frames of a video input `[B, T, H, W, C]` (None for images `[B, H, W, C]`); video needs temporal layers."""
    if x.ndim == 4:
        return None
    if temporal is None:
        raise ValueError(f"video input {x.shape} needs a config with temporal=TemporalConfig(...)")
    return x.shape[1]


class UNet(nn.Module):
    """Imagen-style text-conditioned U-Net; with `config.temporal` also the space-time STUNet / inflated SSR."""

    config: UNetConfig

    def _check_inputs(self, x, low_res, noise_aug_logsnr) -> int | None:
        """Validates shapes; returns the frame count (None in image mode)."""
        config = self.config
        if x.ndim not in (4, 5):
            raise ValueError(f"x must be [B, H, W, C] or [B, T, H, W, C], got shape {x.shape}")
        if x.shape[-1] != config.in_channels:
            raise ValueError(f"x has {x.shape[-1]} channels but config.in_channels={config.in_channels}")
        factor = 2 ** config.num_downsamples
        if x.shape[-3] % factor or x.shape[-2] % factor:
            raise ValueError(f"frame size {x.shape[-3:-1]} must be divisible by 2**{config.num_downsamples}={factor} "
                             f"for {config.num_downsamples} spatial downsamples")
        if config.low_res_channels and (low_res is None or noise_aug_logsnr is None):
            raise ValueError("this SR config needs low_res and noise_aug_logsnr")
        if not config.low_res_channels and low_res is not None:
            raise ValueError("low_res given but config.low_res_channels=0; use an SR config")
        return clip_frames(x, config.temporal)

    @nn.compact
    def __call__(self, x: jax.Array, logsnr: jax.Array, text_embeddings: jax.Array, text_mask: jax.Array,
                 low_res: jax.Array | None = None, noise_aug_logsnr: jax.Array | None = None,
                 train: bool = False) -> jax.Array:
        config = self.config
        kw = dict(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype))
        num_frames = self._check_inputs(x, low_res, noise_aug_logsnr)
        video = num_frames is not None
        batch = x.shape[0]
        num_levels = len(config.channel_multipliers)
        coarsest = num_levels - 1
        level_frames = frames_per_level(config, num_frames) if video else (1,) * num_levels
        resample_time = video and config.temporal.resampling

        cond, text_tokens = ConditioningEmbedding(
            config.embed_dim, text_tokens=bool(config.cross_attention_levels),
            noise_augmentation=bool(config.low_res_channels), name="conditioning", **kw,
        )(logsnr, text_embeddings, text_mask, noise_aug_logsnr)
        # cond per level, one row per frame: [B * T_level, E].
        level_cond = [jnp.repeat(cond, frames, axis=0) for frames in level_frames]

        h = frames_to_batch(x) if video else x  # [B*T, H, W, C_in]
        if config.low_res_channels:
            small = frames_to_batch(low_res) if video else low_res
            h = jnp.concatenate([h, upsample_low_res(small, h.shape[1], h.shape[2])], axis=-1)
        h = conv_layer(config.base_channels, (3, 3), in_axis=None, name="input_conv", **kw)(h.astype(kw["dtype"]))

        def pretrained_block(module, h, cond, text_tokens, text_mask, prefix: str, level: int, index: int):
            """Residual block plus the level's spatial attention: the unit of the T2I network."""
            h = ResBlock(config.level_channels[level], config.norm_groups, config.dropout_rate, deterministic=not train,
                         name=f"{prefix}_res_{index}", parent=module, **kw)(h, cond)
            h = checkpoint_name(h, remat_lib.BLOCK_OUTPUT)
            if level in config.attention_levels:
                h = SelfAttentionBlock(config.num_heads, config.norm_groups, name=f"{prefix}_self_attention_{index}",
                                       parent=module, **kw)(h)
                h = checkpoint_name(h, remat_lib.BLOCK_OUTPUT)
            if level in config.cross_attention_levels:
                h = CrossAttentionBlock(config.num_heads, config.norm_groups, name=f"{prefix}_cross_attention_{index}",
                                        parent=module, **kw)(h, text_tokens, text_mask)
                h = checkpoint_name(h, remat_lib.BLOCK_OUTPUT)
            return h

        def temporal_block(module, h, text_tokens, text_mask, prefix: str, level: int, index: int):
            """Paper Fig. 4: (2+1)D conv after pretrained blocks above the coarsest level, stacked attention at it;
            then, with `TemporalConfig.text_cross_attention`, a trained cross-attention to the text."""
            if not video:
                return h
            temporal = config.temporal
            clip = batch_to_frames(h, batch)
            if level == coarsest:
                for j in range(temporal.attention_blocks):
                    clip = TemporalAttentionBlock(temporal.attention_heads, parent=module,
                                                  name=f"{prefix}_temporal_attention_{index}_{j}", **kw)(clip)
                    clip = checkpoint_name(clip, remat_lib.BLOCK_OUTPUT)
            else:
                clip = SpaceTimeConvBlock(config.norm_groups, temporal.spatial_kernel_size, temporal.conv_kernel_size,
                                          name=f"{prefix}_temporal_conv_{index}", parent=module, **kw)(clip)
            h = frames_to_batch(clip)
            if temporal.text_cross_attention and level in config.cross_attention_levels:
                h = CrossAttentionBlock(config.num_heads, config.norm_groups, zero_init_output=True, parent=module,
                                        name=f"{prefix}_temporal_cross_attention_{index}", **kw)(
                                            h, text_tokens, text_mask)
                h = checkpoint_name(h, remat_lib.BLOCK_OUTPUT)
            return h

        def unit(module, h, cond, text_tokens, text_mask, prefix: str, level: int, index: int):
            h = pretrained_block(module, h, cond, text_tokens, text_mask, prefix, level, index)
            return temporal_block(module, h, text_tokens, text_mask, prefix, level, index)

        # The remat unit (models/remat.py); submodules name `module` as parent, so parameter paths do not change.
        if config.remat != "none":
            unit = nn.remat(unit, policy=remat_lib.checkpoint_policy(config.remat), static_argnums=(5, 6, 7))

        def block(h, prefix: str, level: int, index: int):
            return unit(self, h, level_cond[level], text_tokens, text_mask, prefix, level, index)

        skips = [h]
        for level in range(num_levels):
            for index in range(config.num_res_blocks):
                h = block(h, f"down_{level}", level, index)
                skips.append(h)
            if level < coarsest:
                h = Downsample(name=f"down_{level}_downsample", **kw)(h)
                if resample_time:
                    clip = TemporalDownsample(name=f"down_{level}_temporal_downsample", **kw)(batch_to_frames(h, batch))
                    h = frames_to_batch(clip)
                skips.append(h)

        for index in range(2):
            h = block(h, "middle", coarsest, index)

        for level in reversed(range(num_levels)):
            for index in range(config.num_res_blocks + 1):
                h = block(jnp.concatenate([h, skips.pop()], axis=-1), f"up_{level}", level, index)
            if level > 0:
                h = Upsample(name=f"up_{level}_upsample", **kw)(h)
                if resample_time:
                    clip = TemporalUpsample(name=f"up_{level}_temporal_upsample", **kw)(batch_to_frames(h, batch))
                    h = frames_to_batch(clip)

        h = nn.silu(group_norm(config.norm_groups, name="output_norm", **kw)(h))
        h = conv_layer(config.out_channels, (3, 3), out_axis=None, name="output_conv", **kw)(h)
        h = h.astype(jnp.float32)
        return batch_to_frames(h, batch) if video else h
