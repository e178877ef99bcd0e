"""Throwaway pieces for trainer tests: a toy denoiser with the UNet call signature, a toy text encoder and a
toy data iterator. They keep infrastructure tests fast; the stage tests use the real models and data.

Importable by subprocesses (PYTHONPATH=tests/train) so toy runs can go through the command line too.
"""

import dataclasses

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from lumiere_jax.stages import adapter as adapter_lib

TEXT_LENGTH = 6
VOCAB = 320


class ToyDenoiser(nn.Module):
    """`x: [B, (T,) H, W, C]` -> `[B, (T,) H, W, 3]`: spatial convs conditioned on logsnr and pooled text, plus
    (video) a temporal mixing parameter named like the real model's temporal layers."""

    features: int = 8

    @nn.compact
    def __call__(self, x, logsnr, text_embeddings, text_mask, low_res=None, noise_aug_logsnr=None, train=False):
        video = x.ndim == 5
        if low_res is not None:
            factor = x.shape[-2] // low_res.shape[-2]
            upsampled = jnp.repeat(jnp.repeat(low_res, factor, axis=-3), factor, axis=-2)
            x = jnp.concatenate([x, upsampled, jnp.broadcast_to(
                (noise_aug_logsnr / 10.0).reshape((-1,) + (1,) * (x.ndim - 1)), (*x.shape[:-1], 1))], axis=-1)
        frames = x.reshape((-1, *x.shape[-3:])) if video else x  # [B*T, H, W, C]
        conv_init = nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, None, "conv_in", "conv_out"))
        h = nn.Conv(self.features, (3, 3), kernel_init=conv_init, name="spatial_conv")(frames)
        pooled = jnp.sum(text_embeddings * text_mask[..., None], axis=1) / jnp.maximum(
            jnp.sum(text_mask, axis=1, keepdims=True), 1)
        dense_init = nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp"))
        cond = nn.Dense(self.features, kernel_init=dense_init, name="cond")(
            jnp.concatenate([pooled, logsnr[:, None] / 10.0], axis=-1))
        if video:
            cond = jnp.repeat(cond, x.shape[1], axis=0)
        h = nn.silu(h + cond[:, None, None, :])
        if video:
            h = h.reshape((*x.shape[:-1], self.features))
            mix_init = nn.with_logical_partitioning(nn.initializers.zeros, ("frames_embed",))
            mix = self.param("temporal_mix", mix_init, (3,))
            h = h + mix[0] * jnp.roll(h, 1, axis=1) + mix[1] * h + mix[2] * jnp.roll(h, -1, axis=1)
            h = h.reshape((-1, *h.shape[-3:]))
        out = nn.Conv(3, (3, 3), kernel_init=conv_init, name="out_conv")(h)
        return out.reshape((*x.shape[:-1], 3))


@dataclasses.dataclass(frozen=True)
class ToyTextConfig:
    d_model: int = 16


class ToyTextEncoder:
    """Frozen random token embeddings with the TextEncoder interface (init / encode / logical_partition_specs)."""

    config = ToyTextConfig()

    def init(self, rng):
        return {"embedding": jax.random.normal(rng, (VOCAB, self.config.d_model), jnp.float32)}

    def encode(self, params, tokens, mask):
        return jnp.where(mask[..., None], params["embedding"][tokens], 0.0)

    def logical_partition_specs(self):
        return {"embedding": PartitionSpec("vocab", "embed")}


def temporal_only_mask(params):
    """Trains only parameters whose path names a temporal layer (as STUNet freezes the T2I layers)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: any("temporal" in str(getattr(key, "key", key)) for key in path), params)


@gin.configurable
def toy_adapter(stage="stunet", frames=4, size=8, temporal_only=False, name="toy", features=8):
    image = stage in adapter_lib.IMAGE_STAGES
    sample_shape = (size, size, 3) if image else (frames, size, size, 3)
    return adapter_lib.ModelAdapter(
        name=name, module=ToyDenoiser(features), stage=stage, text_encoder=ToyTextEncoder(),
        sample_shape=sample_shape, low_res_size=size // 2 if stage in adapter_lib.SR_STAGES else 0,
        text_length=TEXT_LENGTH,
        trainable_mask=temporal_only_mask if temporal_only else None,
        window_frames=None if image else frames)


class ToyIterator:
    """Deterministic batches of moving squares: batch i is a pure function of (split, seed, shard, i)."""

    def __init__(self, split, batch_size, seed, shard_index, num_shards, frames=4, size=8, nan_at=()):
        del num_shards
        self.split, self.batch_size, self.seed, self.shard = split, batch_size, seed, shard_index
        self.frames, self.size, self.nan_at = frames, size, set(nan_at)
        self.index = 0

    def __iter__(self):
        return self

    def __next__(self):
        rng = np.random.default_rng([self.seed, self.shard, self.index, 0 if self.split == "train" else 1])
        video = -np.ones((self.batch_size, self.frames, self.size, self.size, 3), np.float32)
        for b in range(self.batch_size):
            x, y, dx = rng.integers(0, self.size - 3), rng.integers(0, self.size - 3), rng.choice([-1, 1])
            color = rng.uniform(-1, 1, 3)
            for t in range(self.frames):
                xt = (x + dx * t) % (self.size - 3)
                video[b, t, y:y + 3, xt:xt + 3] = color
        tokens = rng.integers(3, VOCAB, (self.batch_size, TEXT_LENGTH)).astype(np.int32)
        mask = np.arange(TEXT_LENGTH)[None] < rng.integers(1, TEXT_LENGTH + 1, (self.batch_size, 1))
        if self.split == "train" and self.index in self.nan_at:
            video[:] = np.nan
        self.index += 1
        return {"video": video, "text_tokens": tokens * mask, "text_mask": mask}

    def get_state(self):
        return {"index": self.index}

    def set_state(self, state):
        self.index = int(state["index"])


@gin.configurable
def toy_dataset(split, batch_size, seed, shard_index, num_shards, frames=4, size=8, nan_at=()):
    return ToyIterator(split, batch_size, seed, shard_index, num_shards, frames, size, nan_at)
