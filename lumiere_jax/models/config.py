"""Model configuration: one frozen dataclass for the U-Net family (T2I, STUNet, SSR) and its presets.

T2I, STUNet and SSR are the same `UNet` module with different configs:
  T2I:    `temporal=None`, no low-res input.
  STUNet: `temporal=TemporalConfig(resampling=True)`: temporal down/up-sampling after every spatial
          one, (2+1)D conv blocks at every level but the coarsest, stacked temporal attention at the coarsest.
  SSR:    `low_res_channels=3` (low-res frames upsampled and concatenated, noise-augmentation level
          embedded) and `temporal=TemporalConfig(resampling=False)`: runs on windows of T' frames.

The presets below are the one source of the shipped sizes: run files pick one by name (`MODEL_SIZE`, i.e.
`unet_adapter.size`). A model of your own is written in gin as `unet_adapter.model_config = @UNetConfig()`
with `UNetConfig.*` (and `TemporalConfig.*`) bindings, or as preset fields changed by `unet_adapter.overrides`.

Rematerialisation (`remat`, models/remat.py): "full" for the paper presets, "none" for tiny and small. "full"
keeps the least memory, and the paper STUNet needs memory first on the 16 and 32 GiB chips (a clip split over a
v6e-4 peaks at 20.36 GiB per chip with it, BENCHMARKS.md 11c); on v5p, "save_dots" fits one clip per chip
(56.69 GiB) at 1.0006x the no-remat FLOPs, so v5p runs should pass `unet_adapter.remat = 'save_dots'`. The small
preset fits one accelerator without remat.

Preset sizes (our choice; the paper gives no architecture numbers beyond "Imagen base, 128x128, 80 frames"):
  tiny:  CPU tests, 32x32, base 32 channels, 2 down-samplings.
  small: one accelerator, 64x64, base 128 channels, 3 down-samplings, 16 frames.
  paper: TPU, 128x128 x 80 frames, base 256 channels with multipliers (1, 2, 4, 6, 8): four spatial (and
         temporal) down-samplings, 80 -> 5 frames and 128 -> 8 pixels at the coarsest level, as in paper
         Fig. 4. About 2.0B T2I parameters, Imagen's 2B base model (`python -m
         lumiere_jax.models.param_counts`).
"""

from __future__ import annotations

import dataclasses

import gin
import jax.numpy as jnp

from lumiere_jax.models.remat import REMAT_POLICIES

PRESET_SIZES = ("tiny", "small", "paper")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TemporalConfig:
    """The temporal (inflation) part of a space-time U-Net; `UNetConfig.temporal=None` means image-only.

    Attributes:
      num_frames: frames the model is built for (STUNet: the clip; SSR: the window T'); used for example
        inputs and validated against `resampling`. Any count divisible by the resampling factor works.
      resampling: temporal down/up-sampling after every spatial one (paper Fig. 4). False gives the
        fixed-temporal-resolution variant (SSR, and the cost comparison).
      conv_kernel_size: taps of the temporal 1-D convolutions in the (2+1)D blocks.
      spatial_kernel_size: k of the k x k spatial convolution in the (2+1)D blocks.
      attention_blocks: temporal self-attention blocks stacked after each pretrained block at the coarsest level.
      attention_heads: heads of the temporal self-attention.
      text_cross_attention: each temporal block at a cross-attention level is followed by a trained,
        zero-initialised cross-attention from the clip's pixels to the text tokens (our option, off in the
        presets: the paper's temporal blocks see only the frozen T2I features). The tiny demo's T2I is trained on
        still frames whose captions have no motion words, so its frozen features cannot carry a direction.
    """

    num_frames: int = 8
    resampling: bool = True
    conv_kernel_size: int = 3
    spatial_kernel_size: int = 3
    attention_blocks: int = 2
    attention_heads: int = 4
    text_cross_attention: bool = False


@gin.configurable
@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Architecture of the U-Net; levels are numbered 0 (full resolution) to len(channel_multipliers) - 1.

    Attributes:
      image_size: frame height = width the model is built for (example inputs, divisibility check).
      in_channels: channels of x (3; 7 for <J, C, M> conditional generation, paper 4.2).
      out_channels: channels of the prediction.
      base_channels: channels at level 0; level l has base_channels * channel_multipliers[l].
      channel_multipliers: one per level; a spatial down-sampling sits between consecutive levels.
      num_res_blocks: residual blocks per level on the way down (num_res_blocks + 1 on the way up).
      attention_levels: levels with spatial self-attention after each residual block.
      cross_attention_levels: levels with cross-attention to the text tokens after each residual block.
      num_heads: heads of the spatial self- and cross-attention.
      norm_groups: GroupNorm groups (must divide every channel count).
      dropout_rate: dropout in the residual blocks (train=True only; hashed masks, models/dropout.py).
      embed_dim: width of the conditioning vector (logsnr + pooled text [+ noise aug]) and text tokens.
      text_embed_dim: width D of the incoming text embeddings (T5-XXL: 4096); used for example inputs.
      text_length: L of the incoming text embeddings; used for example inputs.
      low_res_channels: 0, or the channels of the low-res conditioning input (SSR: 3).
      low_res_size: frame size of the low-res input (SSR; example inputs only).
      dtype: compute dtype name ("float32", "bfloat16").
      param_dtype: parameter dtype name.
      remat: what the backward pass keeps of each block unit (residual block, spatial attention, temporal
        block): a policy name from `models/remat.py`, "none" (keep everything), "full" (keep unit inputs only,
        about one extra forward pass), "save_block_outputs", "save_dots", "offload_block_outputs".
      temporal: None for an image model; a TemporalConfig for STUNet / SSR.
    """

    image_size: int = 32
    in_channels: int = 3
    out_channels: int = 3
    base_channels: int = 32
    channel_multipliers: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (2,)
    cross_attention_levels: tuple[int, ...] = (1, 2)
    num_heads: int = 2
    norm_groups: int = 8
    dropout_rate: float = 0.0
    embed_dim: int = 128
    text_embed_dim: int = 32
    text_length: int = 8
    low_res_channels: int = 0
    low_res_size: int = 0
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"
    temporal: TemporalConfig | None = None

    def __post_init__(self):
        num_levels = len(self.channel_multipliers)
        for field in ("attention_levels", "cross_attention_levels", "channel_multipliers"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
        for field in ("attention_levels", "cross_attention_levels"):
            bad = [level for level in getattr(self, field) if not 0 <= level < num_levels]
            if bad:
                raise ValueError(f"{field}={getattr(self, field)} names levels {bad} outside 0..{num_levels - 1}; "
                                 f"there are {num_levels} levels (one per channel multiplier)")
        for channels in self.level_channels:
            if channels % self.norm_groups:
                raise ValueError(f"norm_groups={self.norm_groups} does not divide {channels} channels; choose "
                                 f"norm_groups dividing every base_channels * multiplier")
            if channels % self.num_heads:
                raise ValueError(f"num_heads={self.num_heads} does not divide {channels} channels")
        factor = 2 ** self.num_downsamples
        if self.image_size % factor:
            raise ValueError(f"image_size={self.image_size} must be divisible by 2**{self.num_downsamples}={factor} "
                             f"for {self.num_downsamples} spatial downsamples")
        if self.low_res_channels and not self.low_res_size:
            raise ValueError("low_res_channels > 0 needs low_res_size (the SSR input frame size)")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat={self.remat!r} is not a remat policy; choose one of {REMAT_POLICIES} "
                             "(models/remat.py)")
        jnp.dtype(self.dtype), jnp.dtype(self.param_dtype)  # Fail early on an unknown dtype name.

    @property
    def level_channels(self) -> tuple[int, ...]:
        return tuple(self.base_channels * multiplier for multiplier in self.channel_multipliers)

    @property
    def num_downsamples(self) -> int:
        return len(self.channel_multipliers) - 1

    @property
    def temporal_downsamples(self) -> int:
        return self.num_downsamples if self.temporal is not None and self.temporal.resampling else 0


def _sized(size: str, table: dict[str, dict]) -> dict:
    if size not in table:
        raise ValueError(f"unknown preset size {size!r}; choose one of {PRESET_SIZES}")
    return table[size]


_T2I = {
    "tiny": dict(image_size=32, base_channels=32, channel_multipliers=(1, 2, 2), num_res_blocks=1,
                 attention_levels=(2,), cross_attention_levels=(1, 2), num_heads=2, norm_groups=8,
                 embed_dim=128, text_embed_dim=32, text_length=8),
    "small": dict(image_size=64, base_channels=128, channel_multipliers=(1, 2, 3, 4), num_res_blocks=2,
                  attention_levels=(3,), cross_attention_levels=(2, 3), num_heads=8, norm_groups=32,
                  embed_dim=512, text_embed_dim=512, text_length=64, dropout_rate=0.1,
                  dtype="bfloat16"),
    "paper": dict(image_size=128, base_channels=256, channel_multipliers=(1, 2, 4, 6, 8), num_res_blocks=3,
                  attention_levels=(4,), cross_attention_levels=(2, 3, 4), num_heads=16, norm_groups=32,
                  embed_dim=1024, text_embed_dim=4096, text_length=128, dropout_rate=0.1,
                  dtype="bfloat16", remat="full"),
}
_TEMPORAL = {
    "tiny": dict(num_frames=8, attention_blocks=2, attention_heads=2),
    "small": dict(num_frames=16, attention_blocks=2, attention_heads=8),
    "paper": dict(num_frames=80, attention_blocks=4, attention_heads=16),
}
# SSR: a wider-field, attention-light U-Net (Imagen-style SR: cross-attention only at the coarsest level).
_SSR = {
    "tiny": dict(image_size=32, base_channels=32, channel_multipliers=(1, 2, 2), num_res_blocks=1,
                 attention_levels=(), cross_attention_levels=(2,), num_heads=2, norm_groups=8,
                 embed_dim=128, text_embed_dim=32, text_length=8, low_res_channels=3, low_res_size=16),
    "small": dict(image_size=128, base_channels=64, channel_multipliers=(1, 2, 4, 4), num_res_blocks=2,
                  attention_levels=(), cross_attention_levels=(3,), num_heads=8, norm_groups=32,
                  embed_dim=512, text_embed_dim=512, text_length=64, low_res_channels=3, low_res_size=64,
                  dtype="bfloat16"),
    "paper": dict(image_size=1024, base_channels=128, channel_multipliers=(1, 1, 2, 4, 8), num_res_blocks=2,
                  attention_levels=(), cross_attention_levels=(4,), num_heads=8, norm_groups=32,
                  embed_dim=1024, text_embed_dim=4096, text_length=128, low_res_channels=3, low_res_size=128,
                  dtype="bfloat16", remat="full"),
}
_SSR_TEMPORAL = {
    "tiny": dict(num_frames=4, resampling=False, attention_blocks=1, attention_heads=2),
    "small": dict(num_frames=8, resampling=False, attention_blocks=1, attention_heads=8),
    "paper": dict(num_frames=16, resampling=False, attention_blocks=1, attention_heads=8),
}


def t2i_config(size: str = "tiny") -> UNetConfig:
    """The text-to-image base U-Net of a preset size."""
    return UNetConfig(**_sized(size, _T2I))


def stunet_config(size: str = "tiny", resampling: bool = True) -> UNetConfig:
    """The T2I U-Net inflated into a STUNet (paper section 2); `resampling=False`: fixed temporal resolution."""
    temporal = TemporalConfig(**{**_sized(size, _TEMPORAL), "resampling": resampling})
    return UNetConfig(**_sized(size, _T2I), temporal=temporal)


def conditional_config(size: str = "tiny") -> UNetConfig:
    """STUNet on <J, C, M>: 7 input channels (paper 4.2)."""
    return dataclasses.replace(stunet_config(size), in_channels=7)


def ssr_config(size: str = "tiny") -> UNetConfig:
    """The inflated spatial super-resolution U-Net: no temporal resampling, runs on windows of T' frames."""
    return UNetConfig(**_sized(size, _SSR), temporal=TemporalConfig(**_sized(size, _SSR_TEMPORAL)))


def ssr_image_config(size: str = "tiny") -> UNetConfig:
    """The image SR U-Net the inflated SSR starts from."""
    return dataclasses.replace(ssr_config(size), temporal=None)
