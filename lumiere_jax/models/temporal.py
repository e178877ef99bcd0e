"""Temporal modules that inflate the T2I U-Net into STUNet (paper section 2, Fig. 4). All act on
`video: [B, T, H, W, C]` and are residual-identity or nearest-neighbour at init:

  TemporalDownsample:      stride-2 temporal conv; at init output frame i = input frame 2i (x[:, ::2]).
  TemporalUpsample:        repeat frames x2 then a temporal conv; at init = repeat(x, 2, axis=1).
  SpaceTimeConvBlock:      (2+1)D block: spatial k x k conv then temporal 1-D conv; zero-init output.
  TemporalAttentionBlock:  self-attention across frames at each pixel, sinusoidal frame position; zero-init output.

Space-time blocks are reshaped 2-D / 1-D convolutions (frames or pixels folded into the batch), which XLA runs
faster than 3-D convolutions.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lumiere_jax.models.conditioning import sinusoidal_embedding
from lumiere_jax.models.layers import (Dtype, MultiHeadAttention, conv_layer, group_norm, layer_norm)
from lumiere_jax.parallel.mesh import constrain_activation

VIDEO_AXES = ("activation_batch", "activation_frames", "activation_height", "activation_width",
              "activation_channels")


def constrain_video(video: jax.Array) -> jax.Array:
    """Block-boundary sharding constraint for `video: [B, T, H, W, C]`: under a clip axis, frames are split
    where it divides them, else height or width (parallel/mesh.py)."""
    return constrain_activation(video, VIDEO_AXES)


def frames_to_batch(video: jax.Array) -> jax.Array:
    """`[B, T, H, W, C] -> [B*T, H, W, C]`: spatial layers see each frame as an image."""
    return video.reshape((-1,) + video.shape[2:])


def batch_to_frames(frames: jax.Array, batch: int) -> jax.Array:
    """`[B*T, H, W, C] -> [B, T, H, W, C]`."""
    return frames.reshape((batch, -1) + frames.shape[1:])


def pixels_to_batch(video: jax.Array) -> jax.Array:
    """`[B, T, H, W, C] -> [B*H*W, T, C]`: temporal layers see each pixel's frame sequence."""
    batch, frames, height, width, channels = video.shape
    return video.transpose(0, 2, 3, 1, 4).reshape(batch * height * width, frames, channels)


def batch_to_pixels(sequences: jax.Array, batch: int, height: int, width: int) -> jax.Array:
    """`[B*H*W, T, C] -> [B, T, H, W, C]`."""
    _, frames, channels = sequences.shape
    return sequences.reshape(batch, height, width, frames, channels).transpose(0, 3, 1, 2, 4)


def center_identity_init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
    """Temporal conv kernel `[K, C, C]` that copies the centre tap's frame: identity at tap K // 2, zero elsewhere."""
    del key
    taps, in_channels, out_channels = shape
    if in_channels != out_channels:
        raise ValueError(f"an identity temporal kernel needs equal in/out channels, got {shape}")
    return jnp.zeros(shape, dtype).at[taps // 2].set(jnp.eye(in_channels, dtype=dtype))


def _temporal_conv(video: jax.Array, *, name: str, kernel_size: int, strides: int, padding, kernel_init,
                   dtype: Dtype, param_dtype: Dtype) -> jax.Array:
    """A C -> C 1-D conv over frames at every pixel. `[B, T, H, W, C] -> [B, T', H, W, C]`."""
    batch, _, height, width, channels = video.shape
    conv = conv_layer(channels, (kernel_size,), strides=strides, padding=padding, kernel_init=kernel_init,
                      name=name, dtype=dtype, param_dtype=param_dtype)
    return constrain_video(batch_to_pixels(conv(pixels_to_batch(video)), batch, height, width))


class TemporalDownsample(nn.Module):
    """Halves T: 3-tap stride-2 conv over frames, initialised to pick frame 2i (paper: nearest-neighbour init)."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, video: jax.Array) -> jax.Array:
        # Padding (1, 1) with stride 2 centres output frame i on input frame 2i.
        return _temporal_conv(video, name="conv", kernel_size=3, strides=2, padding=((1, 1),),
                              kernel_init=center_identity_init, dtype=self.dtype, param_dtype=self.param_dtype)


class TemporalUpsample(nn.Module):
    """Doubles T: repeat each frame twice, then a 3-tap conv over frames initialised to the identity."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, video: jax.Array) -> jax.Array:
        return _temporal_conv(jnp.repeat(video, 2, axis=1), name="conv", kernel_size=3, strides=1, padding="SAME",
                              kernel_init=center_identity_init, dtype=self.dtype, param_dtype=self.param_dtype)


class SpaceTimeConvBlock(nn.Module):
    """(2+1)D residual block (paper Fig. 4b): GroupNorm-SiLU-spatial conv, GroupNorm-SiLU-temporal conv.

    The temporal conv is zero-initialised, so the block is the identity at init.
    """

    norm_groups: int
    spatial_kernel_size: int = 3
    temporal_kernel_size: int = 3
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, video: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        batch, channels = video.shape[0], video.shape[-1]
        h = nn.silu(group_norm(self.norm_groups, name="norm_0", **kw)(frames_to_batch(video)))
        kernel = (self.spatial_kernel_size,) * 2
        h = conv_layer(channels, kernel, name="spatial_conv", **kw)(h)
        h = batch_to_frames(nn.silu(group_norm(self.norm_groups, name="norm_1", **kw)(h)), batch)
        h = _temporal_conv(h, name="temporal_conv", kernel_size=self.temporal_kernel_size, strides=1, padding="SAME",
                           kernel_init=nn.initializers.zeros, **kw)
        return constrain_video(video + h)


class TemporalAttentionBlock(nn.Module):
    """Residual self-attention across frames at every pixel (paper Fig. 4c); zero-init output projection.

    A sinusoidal encoding of the frame index is added to the normalised input, so any frame count works.
    """

    num_heads: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, video: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        batch, frames, height, width, channels = video.shape
        sequences = layer_norm(name="norm", **kw)(pixels_to_batch(video))  # [B*H*W, T, C]
        positions = sinusoidal_embedding(jnp.arange(frames), channels, max_period=10_000.0)  # [T, C]
        sequences = sequences + positions.astype(sequences.dtype)[None]
        attention = MultiHeadAttention(self.num_heads, zero_init_output=True, name="attention", **kw)
        attended = attention(sequences, sequences)
        return constrain_video(video + batch_to_pixels(attended, batch, height, width))
