"""DeepFloyd IF U-Net configuration: one frozen dataclass, the published stage I / II sizes, and the reading
of a downloaded `unet/config.json` (diffusers' `UNet2DConditionModel` fields).

IF's U-Nets differ from our Imagen-style family in ways that change parameter shapes (residual blocks as
resamplers, attention with the text added to the keys and values, attention-pooled text, 6 output channels),
so they are a sibling module (models/if_unet.py) with this config; the temporal part is our `TemporalConfig`,
inflated the same way as our U-Net (models/inflate.py).

A model's architecture comes from its downloaded `unet/config.json` (`config_from_diffusers`; nothing is fetched),
so weights always load into the shapes they were saved with. The published IF-I-M/L/XL and IF-II-M/L values are
not written out here: they could not be checked against the published files where this was written (see
BENCHMARKS.md for how to count a downloaded model's parameters).
"""

from __future__ import annotations

import dataclasses

import gin
import jax.numpy as jnp

from lumiere_jax.models.config import TemporalConfig

NORM_EPSILON = 1e-5  # diffusers' norm_eps for IF; also its LayerNorm and cross-attention GroupNorm default.
TEXT_NORM_GROUPS = 32  # the GroupNorm of the text tokens in every attention (diffusers' fixed default, not a field)

# diffusers' block types for IF: a level with attention is SimpleCrossAttn*, one without ResnetDownsample / -Upsample.
ATTENTION_DOWN_BLOCK = "SimpleCrossAttnDownBlock2D"
PLAIN_DOWN_BLOCK = "ResnetDownsampleBlock2D"
ATTENTION_UP_BLOCK = "SimpleCrossAttnUpBlock2D"
PLAIN_UP_BLOCK = "ResnetUpsampleBlock2D"
MID_BLOCK = "UNetMidBlock2DSimpleCrossAttn"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class IFUNetConfig:
    """Architecture of an IF U-Net; levels are numbered 0 (full resolution) to len(block_channels) - 1.

    Attributes (diffusers' field in brackets):
      image_size: frame height = width the model is built for [sample_size].
      in_channels: 3 for stage I; 6 for stage II (x and the upsampled low-res image) [in_channels].
      out_channels: 6: epsilon and the learned-range variance interpolation [out_channels].
      block_channels: channels per level [block_out_channels].
      layers_per_block: residual blocks per level on the way down (one more on the way up) [layers_per_block].
      attention_levels: levels with text-and-image attention after each residual block [the levels whose
        down block is SimpleCrossAttnDownBlock2D]. The middle always has one.
      attention_head_dim: channels per head; heads = level channels // attention_head_dim [attention_head_dim].
      text_embed_dim: width of the incoming T5 embeddings (T5-XXL: 4096) [encoder_hid_dim].
      cross_attention_dim: width of the projected text tokens the attention layers read [cross_attention_dim].
      pooling_heads: heads of the attention pooling of the text into the conditioning vector
        [addition_embed_type_num_heads].
      norm_groups: GroupNorm groups [norm_num_groups].
      noise_level_conditioning: stage II: the low-res augmentation level (an integer timestep) is embedded and
        added to the conditioning vector [class_embed_type="timestep"].
      low_res_size: stage II: frame size of the low-res input (example inputs only).
      text_length: L of the incoming text embeddings (IF's pipeline pads T5 to 77 tokens); example inputs only.
      dropout_rate: dropout in the residual blocks (train=True only) [dropout].
      dtype, param_dtype, remat, temporal: as in `UNetConfig`.
    """

    image_size: int = 64
    in_channels: int = 3
    out_channels: int = 6
    block_channels: tuple[int, ...] = (512, 1024, 1536, 2048)
    layers_per_block: tuple[int, ...] = (3, 3, 3, 3)
    attention_levels: tuple[int, ...] = (1, 2, 3)
    attention_head_dim: int = 64
    text_embed_dim: int = 4096
    cross_attention_dim: int = 4096
    pooling_heads: int = 64
    norm_groups: int = 32
    noise_level_conditioning: bool = False
    low_res_size: int = 0
    text_length: int = 77
    dropout_rate: float = 0.0
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False
    temporal: TemporalConfig | None = None

    def __post_init__(self):
        for field in ("block_channels", "layers_per_block", "attention_levels"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
        num_levels = len(self.block_channels)
        if len(self.layers_per_block) != num_levels:
            raise ValueError(f"layers_per_block={self.layers_per_block} needs one entry per level "
                             f"({num_levels}: one per block_channels entry)")
        bad = [level for level in self.attention_levels if not 0 <= level < num_levels]
        if bad:
            raise ValueError(f"attention_levels={self.attention_levels} names levels {bad} outside 0..{num_levels - 1}")
        for channels in self.block_channels:
            if channels % self.norm_groups or channels % self.attention_head_dim:
                raise ValueError(f"{channels} channels must be divisible by norm_groups={self.norm_groups} and "
                                 f"attention_head_dim={self.attention_head_dim}")
        if self.text_embed_dim % self.pooling_heads:
            raise ValueError(f"pooling_heads={self.pooling_heads} must divide text_embed_dim={self.text_embed_dim}")
        if self.cross_attention_dim % TEXT_NORM_GROUPS:
            raise ValueError(f"cross_attention_dim={self.cross_attention_dim} must be divisible by "
                             f"{TEXT_NORM_GROUPS} (the text tokens are group-normalised in {TEXT_NORM_GROUPS} groups)")
        if self.image_size % 2 ** self.num_downsamples:
            raise ValueError(f"image_size={self.image_size} must be divisible by 2**{self.num_downsamples}")
        if self.noise_level_conditioning and not self.low_res_size:
            raise ValueError("a stage II config (noise_level_conditioning=True) needs low_res_size")
        jnp.dtype(self.dtype), jnp.dtype(self.param_dtype)

    @property
    def num_downsamples(self) -> int:
        return len(self.block_channels) - 1

    @property
    def temporal_downsamples(self) -> int:
        return self.num_downsamples if self.temporal is not None and self.temporal.resampling else 0

    @property
    def embed_dim(self) -> int:
        """Width of the conditioning vector (diffusers: block_out_channels[0] * 4)."""
        return 4 * self.block_channels[0]

    @property
    def low_res_channels(self) -> int:
        return self.in_channels - 3 if self.noise_level_conditioning else 0


# Fields of a diffusers config.json that must hold these values for the IF architecture this module implements.
_REQUIRED = {
    "act_fn": "gelu", "addition_embed_type": "text", "resnet_time_scale_shift": "scale_shift",
    "mid_block_type": MID_BLOCK, "cross_attention_norm": "group_norm", "time_embedding_type": "positional",
    "flip_sin_to_cos": True, "freq_shift": 0, "conv_in_kernel": 3, "conv_out_kernel": 3,
    "resnet_skip_time_act": False, "resnet_out_scale_factor": 1.0, "mid_block_scale_factor": 1,
    "only_cross_attention": False, "time_embedding_act_fn": None, "timestep_post_act": None,
    "time_embedding_dim": None, "class_embeddings_concat": False, "center_input_sample": False,
    "norm_eps": NORM_EPSILON,
}


def config_from_diffusers(fields: dict, **overrides) -> IFUNetConfig:
    """Our config from the fields of a diffusers IF `unet/config.json`; raises on any field we do not implement."""
    wrong = {name: fields[name] for name, value in _REQUIRED.items() if name in fields and fields[name] != value}
    if wrong:
        raise ValueError(f"this config.json is not an IF U-Net this code implements: {wrong} (expected "
                         f"{ {name: _REQUIRED[name] for name in wrong} })")
    down, up = list(fields["down_block_types"]), list(fields["up_block_types"])
    attention_levels = tuple(level for level, kind in enumerate(down) if kind == ATTENTION_DOWN_BLOCK)
    expected_down = [ATTENTION_DOWN_BLOCK if level in attention_levels else PLAIN_DOWN_BLOCK
                     for level in range(len(down))]
    expected_up = [ATTENTION_UP_BLOCK if kind == ATTENTION_DOWN_BLOCK else PLAIN_UP_BLOCK for kind in reversed(down)]
    if down != expected_down or up != expected_up:
        raise ValueError(f"block types {down} / {up}: IF U-Nets use {PLAIN_DOWN_BLOCK} / {ATTENTION_DOWN_BLOCK} "
                         f"down and the mirrored {PLAIN_UP_BLOCK} / {ATTENTION_UP_BLOCK} up")
    class_embed = fields.get("class_embed_type")
    if class_embed not in (None, "timestep"):
        raise ValueError(f"class_embed_type={class_embed!r}: IF stage II uses 'timestep' (the noise level)")
    if fields.get("attention_head_dim") is None or not isinstance(fields["attention_head_dim"], int):
        raise ValueError(f"attention_head_dim={fields.get('attention_head_dim')!r}: expected one integer")
    layers = fields["layers_per_block"]
    num_levels = len(fields["block_out_channels"])
    return IFUNetConfig(
        image_size=fields["sample_size"],
        in_channels=fields["in_channels"],
        out_channels=fields["out_channels"],
        block_channels=tuple(fields["block_out_channels"]),
        layers_per_block=tuple(layers) if isinstance(layers, (list, tuple)) else (layers,) * num_levels,
        attention_levels=attention_levels,
        attention_head_dim=fields["attention_head_dim"],
        text_embed_dim=fields["encoder_hid_dim"],
        cross_attention_dim=fields["cross_attention_dim"],
        pooling_heads=fields.get("addition_embed_type_num_heads", 64),
        norm_groups=fields["norm_num_groups"],
        noise_level_conditioning=class_embed == "timestep",
        low_res_size=fields["sample_size"] // 4 if class_embed == "timestep" else 0,  # IF's SR stages are 4x
        dropout_rate=fields.get("dropout", 0.0),
        **overrides,
    )
