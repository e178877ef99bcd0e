"""Model FLOPs of the U-Net family counted from its config, for MFU and the fit planner.

Counted: every convolution and dense layer, and attention's two products (QK^T and AV), at 2 FLOPs per
multiply-add. A convolution counts all its taps, also those on the zero padding at the borders (the hardware
multiplies them too); `padding_taps=False` counts only taps inside the input, as XLA's cost analysis does
(at 32x32 a 3x3 conv has 8% fewer such taps, at 128x128 2%). Not counted: norms, activations, softmax,
additions, resizing and the (nearest) spatial repeat; rematerialised recomputation is not model work and is
never counted.

A training step (our definition, MaxText's "model FLOPs" extended to frozen layers):
  forward            every layer once;
  activation grads   a layer's input gradient (same FLOPs as its forward) wherever the gradient has to pass
                     through it to reach a trained parameter, i.e. its input depends on a trained layer;
  weight grads       the weight gradient (same FLOPs again) of trained layers only.
So a trained layer costs 3x its forward (MaxText's 6 * params * tokens counts every layer this way), a frozen
layer 2x when a trained layer lies upstream of it and 1x when none does (STUNet: the frozen T2I layers
before the first temporal block, and the conditioning MLPs); attention's products are 3x when both operands
carry gradients. JAX's autodiff computes exactly these products for `grad` with respect to the trained
parameters (it prunes the rest), so the count is what XLA's un-rematted step must at least do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from lumiere_jax.models.config import UNetConfig
from lumiere_jax.models.unet import frames_per_level

Trained = Callable[[str], bool]  # module path ("down_0_res_0/conv_0") -> whether its weights train


@dataclasses.dataclass(frozen=True)
class LayerFlops:
    """One counted product: a weighted layer (`path` = its module path) or an attention product
    (`.../attention/scores` for QK^T, `.../attention/values` for AV)."""

    path: str
    forward: float
    train: float


@dataclasses.dataclass(frozen=True)
class ModelFlops:
    """FLOPs of one forward pass and one training step (forward + backward, module docstring) of a batch."""

    forward: float
    train: float
    layers: tuple[LayerFlops, ...]


def _taps(size: int, kernel: int, stride: int, pad_low: int, padding_taps: bool) -> int:
    """Kernel taps summed over the output positions of a 1-D convolution of an input of `size`."""
    outputs = (size + 2 * pad_low - kernel) // stride + 1 if stride > 1 else size
    if padding_taps:
        return outputs * kernel
    return sum(sum(0 <= out * stride - pad_low + tap < size for tap in range(kernel)) for out in range(outputs))


class _Tally:
    """Collects products while walking the network; tracks which activations carry gradients."""

    def __init__(self, trained: Trained):
        self.trained = trained
        self.layers: list[LayerFlops] = []

    def weighted(self, path: str, macs: float, input_grad: bool) -> bool:
        """A conv or dense layer of `macs` multiply-adds; returns whether its output carries gradients."""
        trained = bool(self.trained(path))
        self.layers.append(LayerFlops(path, 2.0 * macs, 2.0 * macs * (1 + input_grad + trained)))
        return input_grad or trained

    def product(self, path: str, macs: float, left_grad: bool, right_grad: bool) -> bool:
        """A product of two activations (attention); each operand carrying gradients costs one more pass."""
        self.layers.append(LayerFlops(path, 2.0 * macs, 2.0 * macs * (1 + left_grad + right_grad)))
        return left_grad or right_grad


def _attention(tally: _Tally, path: str, rows: int, queries: int, keys: int, width: int, context_width: int,
               grad: bool, context_grad: bool) -> bool:
    """Multi-head attention of `rows` sequences (models/layers.py MultiHeadAttention): projections to the
    width, QK^T and AV over all heads (heads x head_dim = width), output projection."""
    query = tally.weighted(f"{path}/query", rows * queries * width * width, grad)
    key = tally.weighted(f"{path}/key", rows * keys * context_width * width, context_grad)
    value = tally.weighted(f"{path}/value", rows * keys * context_width * width, context_grad)
    scores = tally.product(f"{path}/scores", rows * queries * keys * width, query, key)
    attended = tally.product(f"{path}/values", rows * queries * keys * width, scores, value)
    return tally.weighted(f"{path}/output", rows * queries * width * width, attended)


def model_flops(config: UNetConfig, batch_size: int, num_frames: int | None = None, height: int | None = None,
                width: int | None = None, trained: Trained = lambda path: True,
                padding_taps: bool = True) -> ModelFlops:
    """FLOPs of `UNet(config)` on `batch_size` inputs `[B, (T,) H, W, C]` (image mode when `num_frames` is None).

    `height`, `width` default to `config.image_size`. `trained(module_path)` says which layers' weights train
    (STUNet stage: `param_paths.is_temporal`); the default trains everything. `padding_taps`: module docstring.
    """
    height = height or config.image_size
    width = width or config.image_size
    video = num_frames is not None
    levels = len(config.channel_multipliers)
    coarsest = levels - 1
    level_frames = frames_per_level(config, num_frames) if video else (1,) * levels
    resample_time = video and config.temporal.resampling
    embed = config.embed_dim
    tally = _Tally(trained)

    # Conditioning: [B] log-SNR (and noise level) MLPs on sinusoids of width E, pooled text, text tokens.
    cond_grad = False
    mlps = ("logsnr_mlp",) + (("noise_aug_mlp",) if config.low_res_channels else ())
    for mlp in mlps:
        hidden = tally.weighted(f"conditioning/{mlp}/dense_0", batch_size * embed * embed, False)
        cond_grad |= tally.weighted(f"conditioning/{mlp}/dense_1", batch_size * embed * embed, hidden)
    cond_grad |= tally.weighted("conditioning/text_pool", batch_size * config.text_embed_dim * embed, False)
    tokens_grad = False
    if config.cross_attention_levels:
        tokens_grad = tally.weighted("conditioning/text_projection",
                                     batch_size * config.text_length * config.text_embed_dim * embed, False)

    def pixels(level: int) -> int:
        return (height // 2 ** level) * (width // 2 ** level)

    def same(level: int, kernel: int = 3) -> int:
        """Taps of a stride-1 `kernel` x `kernel` SAME conv over the frames of `level` (= pixels x k^2 when
        padding taps count)."""
        pad = (kernel - 1) // 2
        return (_taps(height // 2 ** level, kernel, 1, pad, padding_taps)
                * _taps(width // 2 ** level, kernel, 1, pad, padding_taps))

    def strided(level: int) -> int:
        """Taps of the stride-2 3x3 conv (padding 1) from `level` down to level + 1."""
        return (_taps(height // 2 ** level, 3, 2, 1, padding_taps)
                * _taps(width // 2 ** level, 3, 2, 1, padding_taps))

    def frame_taps(frames: int, kernel: int, stride: int = 1) -> int:
        return _taps(frames, kernel, stride, (kernel - 1) // 2, padding_taps)

    def res_block(prefix: str, level: int, in_channels: int, grad: bool) -> bool:
        channels, rows = config.level_channels[level], batch_size * level_frames[level]
        conv_macs = rows * same(level) * channels
        hidden = tally.weighted(f"{prefix}/conv_0", conv_macs * in_channels, grad)
        hidden |= tally.weighted(f"{prefix}/conditioning", rows * embed * 2 * channels, cond_grad)
        out = tally.weighted(f"{prefix}/conv_1", conv_macs * channels, hidden)
        if in_channels != channels:
            out |= tally.weighted(f"{prefix}/skip", rows * pixels(level) * in_channels * channels, grad)
        return out or grad

    def block(prefix: str, level: int, index: int, in_channels: int, grad: bool) -> bool:
        """models/unet.py `block`: residual block, spatial self-/cross-attention, then the temporal block."""
        channels, frames = config.level_channels[level], level_frames[level]
        rows = batch_size * frames
        grad = res_block(f"{prefix}_res_{index}", level, in_channels, grad)
        if level in config.attention_levels:
            grad |= _attention(tally, f"{prefix}_self_attention_{index}/attention", rows, pixels(level),
                               pixels(level), channels, channels, grad, grad)
        if level in config.cross_attention_levels:
            grad |= _attention(tally, f"{prefix}_cross_attention_{index}/attention", batch_size,
                               frames * pixels(level), config.text_length + 1, channels, embed, grad, tokens_grad)
        if not video:
            return grad
        temporal = config.temporal
        if level == coarsest:
            for j in range(temporal.attention_blocks):
                grad |= _attention(tally, f"{prefix}_temporal_attention_{index}_{j}/attention",
                                   batch_size * pixels(level), frames, frames, channels, channels, grad, grad)
        else:
            path = f"{prefix}_temporal_conv_{index}"
            spatial = rows * same(level, temporal.spatial_kernel_size) * channels * channels
            hidden = tally.weighted(f"{path}/spatial_conv", spatial, grad)
            temporal_macs = (batch_size * pixels(level) * frame_taps(frames, temporal.conv_kernel_size)
                             * channels * channels)
            grad = tally.weighted(f"{path}/temporal_conv", temporal_macs, hidden) or grad
        if temporal.text_cross_attention and level in config.cross_attention_levels:
            grad |= _attention(tally, f"{prefix}_temporal_cross_attention_{index}/attention", batch_size,
                               frames * pixels(level), config.text_length + 1, channels, embed, grad, tokens_grad)
        return grad

    in_channels = config.in_channels + config.low_res_channels
    grad = tally.weighted("input_conv", batch_size * level_frames[0] * same(0) * in_channels
                          * config.base_channels, False)
    channels = config.base_channels
    skips = [channels]
    for level in range(levels):
        for index in range(config.num_res_blocks):
            grad = block(f"down_{level}", level, index, channels, grad)
            channels = config.level_channels[level]
            skips.append(channels)
        if level < coarsest:
            rows = batch_size * level_frames[level]
            grad = tally.weighted(f"down_{level}_downsample/conv", rows * strided(level) * channels ** 2, grad)
            if resample_time:
                grad = tally.weighted(f"down_{level}_temporal_downsample/conv", batch_size * pixels(level + 1)
                                      * frame_taps(level_frames[level], 3, 2) * channels ** 2, grad)
            skips.append(channels)
    for index in range(2):
        grad = block("middle", coarsest, index, channels, grad)
    for level in reversed(range(levels)):
        for index in range(config.num_res_blocks + 1):
            grad = block(f"up_{level}", level, index, channels + skips.pop(), grad)
            channels = config.level_channels[level]
        if level > 0:
            rows = batch_size * level_frames[level]
            grad = tally.weighted(f"up_{level}_upsample/conv", rows * same(level - 1) * channels ** 2, grad)
            if resample_time:
                grad = tally.weighted(f"up_{level}_temporal_upsample/conv", batch_size * pixels(level - 1)
                                      * frame_taps(level_frames[level - 1], 3) * channels ** 2, grad)
    tally.weighted("output_conv", batch_size * level_frames[0] * same(0) * channels * config.out_channels,
                   grad)
    layers = tuple(tally.layers)
    return ModelFlops(forward=sum(layer.forward for layer in layers), train=sum(layer.train for layer in layers),
                      layers=layers)
