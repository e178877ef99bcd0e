"""C3D (Tran et al. 2015) fine-tuned on UCF101: the classifier behind the video Inception Score.

The published evaluation network (the Caffe C3D as converted for TGAN, Saito et al.) has convolutions
conv1a, conv2a, conv3a/b, conv4a/b, conv5a/b (3x3x3, stride 1, padding 1, ReLU), max pools pool1 (1x2x2)
and pool2-5 (2x2x2) with Caffe's ceil rounding, and fc6, fc7 (ReLU) and fc8 (101 UCF101 classes).
Input: 16 frames, 112 x 112 crops in Caffe's convention (0..255 pixels, BGR order, minus a mean clip),
see `preprocess`. `width` scales the channel counts (tests use a narrow network).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

CONV_CHANNELS: dict[str, int] = {
    "conv1a": 64, "conv2a": 128, "conv3a": 256, "conv3b": 256,
    "conv4a": 512, "conv4b": 512, "conv5a": 512, "conv5b": 512,
}
# Pools follow these convolutions: (window = stride).
POOL_AFTER: dict[str, tuple[int, int, int]] = {
    "conv1a": (1, 2, 2), "conv2a": (2, 2, 2), "conv3b": (2, 2, 2), "conv4b": (2, 2, 2), "conv5b": (2, 2, 2)}
FC_FEATURES: dict[str, int] = {"fc6": 4096, "fc7": 4096}


@dataclasses.dataclass(frozen=True)
class C3DConfig:
    """C3D hyper-parameters and input convention. Defaults: the UCF101 C3D used for video IS.

    Attributes:
      resize: (height, width) frames are resized to before the mean is subtracted and the crop taken.
      crop: side of the centre crop fed to the network.
      bgr: feed channels in BGR order (Caffe-trained weights).
    """

    width: float = 1.0
    num_classes: int = 101
    num_frames: int = 16
    resize: tuple[int, int] = (128, 171)
    crop: int = 112
    bgr: bool = True

    def channels(self, base: int) -> int:
        return max(1, round(base * self.width))


def max_pool_ceil(x: jax.Array, window: tuple[int, int, int]) -> jax.Array:
    """Max pool with window = stride and Caffe's ceil rounding (partial windows at the end are kept)."""
    pads = [(0, 0)] + [(0, -size % step) for size, step in zip(x.shape[1:4], window)] + [(0, 0)]
    x = jnp.pad(x, pads, constant_values=-jnp.inf)
    return nn.max_pool(x, window, window, padding="VALID")


class C3D(nn.Module):
    """clip: [B, T, crop, crop, 3] preprocessed (see `preprocess`) -> logits [B, num_classes]."""

    config: C3DConfig = C3DConfig()

    @nn.compact
    def __call__(self, clip: jax.Array) -> jax.Array:
        x = clip
        for name, channels in CONV_CHANNELS.items():
            x = nn.relu(nn.Conv(self.config.channels(channels), (3, 3, 3), padding=1, name=name)(x))
            if name in POOL_AFTER:
                x = max_pool_ceil(x, POOL_AFTER[name])
        x = x.reshape(x.shape[0], -1)  # flattened in [T, H, W, C] order (converters permute fc6)
        for name, features in FC_FEATURES.items():
            x = nn.relu(nn.Dense(self.config.channels(features), name=name)(x))
        return nn.Dense(self.config.num_classes, name="fc8")(x)


def pooled_shape(config: C3DConfig) -> tuple[int, int, int, int]:
    """[T, H, W, C] after pool5: what fc6 flattens (1 x 4 x 4 x 512 for the published network)."""
    frames, height, width = config.num_frames, config.crop, config.crop
    for window in POOL_AFTER.values():
        frames, height, width = (math.ceil(size / step) for size, step in zip((frames, height, width), window))
    return frames, height, width, config.channels(CONV_CHANNELS["conv5b"])


def preprocess(video: jax.Array, mean: jax.Array, config: C3DConfig) -> jax.Array:
    """video: [B, T, H, W, 3] in [-1, 1] -> [B, T, crop, crop, 3] Caffe-style network input.

    Pixels to 0..255, resize to `config.resize` (bilinear), subtract `mean` ([T, h, w, 3] or [3], in the
    network's channel order, broadcast), then take the centre `crop` x `crop`.
    """
    batch, frames, _, _, _ = video.shape
    height, width = config.resize
    x = (video.astype(jnp.float32) + 1.0) * 127.5
    x = jax.image.resize(x, (batch, frames, height, width, 3), "bilinear")
    if config.bgr:
        x = x[..., ::-1]
    x = x - mean
    top, left = (height - config.crop) // 2, (width - config.crop) // 2
    return x[:, :, top:top + config.crop, left:left + config.crop]
