"""I3D (Inflated Inception-V1, Carreira & Zisserman 2017): the Kinetics-400 video classifier behind FVD.

Layer names, kernel sizes, strides and branch widths follow the public DeepMind release (and its PyTorch
port `pytorch-i3d`); TF "SAME" padding, BatchNorm eps 1e-3. FVD (Unterthiner et al. 2018) uses the 400
Kinetics logits of 16 frames resized to 224x224 with pixels in [-1, 1] as its features.
`width` scales every channel count (tests use a narrow network; weights exist only for width 1).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

# (branch 0 1x1, branch 1 1x1 -> 3x3, branch 2 1x1 -> 3x3, branch 3 pool -> 1x1) output channels.
MIXED_CHANNELS: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
STEM_UNITS: dict[str, tuple[int, tuple[int, int, int], tuple[int, int, int]]] = {  # name: (channels, kernel, stride)
    "Conv3d_1a_7x7": (64, (7, 7, 7), (2, 2, 2)),
    "Conv3d_2b_1x1": (64, (1, 1, 1), (1, 1, 1)),
    "Conv3d_2c_3x3": (192, (3, 3, 3), (1, 1, 1)),
}
MIXED_BRANCH_UNITS: tuple[tuple[str, int, tuple[int, int, int]], ...] = (  # (name, index in MIXED_CHANNELS, kernel)
    ("b0", 0, (1, 1, 1)), ("b1a", 1, (1, 1, 1)), ("b1b", 2, (3, 3, 3)),
    ("b2a", 3, (1, 1, 1)), ("b2b", 4, (3, 3, 3)), ("b3b", 5, (1, 1, 1)))


@dataclasses.dataclass(frozen=True)
class I3DConfig:
    """I3D hyper-parameters. The published network: width 1.0, 400 classes, 16 x 224 x 224 inputs."""

    width: float = 1.0
    num_classes: int = 400
    image_size: int = 224
    num_frames: int = 16

    def channels(self, base: int) -> int:
        return max(1, round(base * self.width))


class Unit3D(nn.Module):
    """Conv3d (no bias) -> BatchNorm (running statistics) -> ReLU."""

    features: int
    kernel: tuple[int, int, int]
    stride: tuple[int, int, int] = (1, 1, 1)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # x: [B, T, H, W, C]
        x = nn.Conv(self.features, self.kernel, self.stride, padding="SAME", use_bias=False, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
        return nn.relu(x)


class Mixed(nn.Module):
    """Inception block: four branches concatenated on channels."""

    channels: tuple[int, ...]
    config: I3DConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        units = {name: Unit3D(self.config.channels(self.channels[index]), kernel, name=name)
                 for name, index, kernel in MIXED_BRANCH_UNITS}
        branch_0 = units["b0"](x)
        branch_1 = units["b1b"](units["b1a"](x))
        branch_2 = units["b2b"](units["b2a"](x))
        branch_3 = units["b3b"](nn.max_pool(x, (3, 3, 3), (1, 1, 1), padding="SAME"))
        return jnp.concatenate([branch_0, branch_1, branch_2, branch_3], axis=-1)


class I3D(nn.Module):
    """video: [B, T, H, W, 3] in [-1, 1] (224 x 224 for the released weights) -> logits [B, num_classes]."""

    config: I3DConfig = I3DConfig()

    @nn.compact
    def __call__(self, video: jax.Array) -> jax.Array:
        config = self.config
        x = video
        for name, (channels, kernel, stride) in STEM_UNITS.items():
            x = Unit3D(config.channels(channels), kernel, stride, name=name)(x)
            if name in ("Conv3d_1a_7x7", "Conv3d_2c_3x3"):  # MaxPool3d_2a_3x3, MaxPool3d_3a_3x3
                x = nn.max_pool(x, (1, 3, 3), (1, 2, 2), padding="SAME")
        for name, channels in MIXED_CHANNELS.items():
            if name == "Mixed_4b":
                x = nn.max_pool(x, (3, 3, 3), (2, 2, 2), padding="SAME")  # MaxPool3d_4a_3x3
            elif name == "Mixed_5b":
                x = nn.max_pool(x, (2, 2, 2), (2, 2, 2), padding="SAME")  # MaxPool3d_5a_2x2
            x = Mixed(channels, config, name=name)(x)
        # Logits: 2x7x7 average pool (valid), 1x1x1 conv with bias, mean over the remaining frames. Inputs
        # smaller than 16 x 224 x 224 (tests) pool over what is left instead.
        window = tuple(min(size, full) for size, full in zip(x.shape[1:4], (2, 7, 7)))
        x = nn.avg_pool(x, window, (1, 1, 1), padding="VALID")
        x = nn.Conv(config.num_classes, (1, 1, 1), name="logits")(x)
        return x.mean(axis=(1, 2, 3))


def preprocess(video: jax.Array, config: I3DConfig) -> jax.Array:
    """video: [B, T, H, W, 3] in [-1, 1] -> [B, T, S, S, 3], S = config.image_size (bilinear, as FVD does)."""
    batch, frames, _, _, channels = video.shape
    size = config.image_size
    return jax.image.resize(video.astype(jnp.float32), (batch, frames, size, size, channels), "bilinear")
