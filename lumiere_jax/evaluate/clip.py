"""A CLIP-style image-text model (Radford et al. 2021) for text-video alignment (CLIPSIM).

Pre-norm ViT image tower (class token, learned positions, pre/post LayerNorm) and a causal text transformer
pooled at the end-of-text token; both projected without bias into a shared space. The architecture follows
the public OpenAI CLIP / HF `CLIPModel`, so `convert.py` maps its weights name by name.
CLIPSIM of a video = mean over frames of cos(image embedding, text embedding).
"""

from __future__ import annotations

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp

# OpenAI CLIP's published input normalisation.
IMAGE_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    """Tower sizes. Defaults: ViT-B/32 (the usual CLIPSIM model)."""

    image_size: int = 224
    patch_size: int = 32
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    vision_mlp_dim: int = 3072
    vocab_size: int = 49408
    context_length: int = 77
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    text_mlp_dim: int = 2048
    projection_dim: int = 512
    activation: str = "quick_gelu"  # or "gelu"
    layer_norm_eps: float = 1e-5

    def to_json(self, path: str) -> None:
        with open(path, "w") as file:
            json.dump(dataclasses.asdict(self), file, indent=2)

    @classmethod
    def from_json(cls, path: str) -> "CLIPConfig":
        with open(path) as file:
            return cls(**json.load(file))


def _activation(name: str):
    if name == "quick_gelu":
        return lambda x: x * jax.nn.sigmoid(1.702 * x)
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    raise ValueError(f"activation={name!r} is not supported; use 'quick_gelu' or 'gelu'")


class Attention(nn.Module):
    heads: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:  # x: [B, L, D]; mask: [L, L] bool
        batch, length, width = x.shape
        head_dim = width // self.heads

        def project(name):
            return nn.Dense(width, name=name)(x).reshape(batch, length, self.heads, head_dim)

        query, key, value = project("query"), project("key"), project("value")
        logits = jnp.einsum("bqhd,bkhd->bhqk", query, key) / jnp.sqrt(head_dim).astype(x.dtype)
        if mask is not None:
            logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, value).reshape(batch, length, width)
        return nn.Dense(width, name="out")(out)


class EncoderLayer(nn.Module):
    """Pre-norm residual block: x + attn(LN(x)); x + MLP(LN(x))."""

    heads: int
    mlp_dim: int
    activation: str
    eps: float

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        x = x + Attention(self.heads, name="attention")(nn.LayerNorm(self.eps, name="norm_1")(x), mask)
        hidden = nn.Dense(self.mlp_dim, name="fc_1")(nn.LayerNorm(self.eps, name="norm_2")(x))
        return x + nn.Dense(x.shape[-1], name="fc_2")(_activation(self.activation)(hidden))


class VisionTower(nn.Module):
    config: CLIPConfig

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:  # images: [B, S, S, 3] normalised -> [B, width]
        config = self.config
        patch = config.patch_size
        x = nn.Conv(config.vision_width, (patch, patch), (patch, patch), padding="VALID", use_bias=False,
                    name="patch_embed")(images)
        x = x.reshape(x.shape[0], -1, config.vision_width)
        class_embedding = self.param("class_embedding", nn.initializers.normal(0.02), (config.vision_width,))
        x = jnp.concatenate([jnp.broadcast_to(class_embedding, (x.shape[0], 1, config.vision_width)), x], axis=1)
        x = x + self.param("position_embedding", nn.initializers.normal(0.02), x.shape[1:])
        x = nn.LayerNorm(config.layer_norm_eps, name="pre_norm")(x)
        for index in range(config.vision_layers):
            x = EncoderLayer(config.vision_heads, config.vision_mlp_dim, config.activation, config.layer_norm_eps,
                             name=f"layers_{index}")(x, None)
        return nn.LayerNorm(config.layer_norm_eps, name="post_norm")(x[:, 0])


class TextTower(nn.Module):
    config: CLIPConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:  # [B, L] int, [B, L] bool -> [B, width]
        config = self.config
        length = tokens.shape[1]
        x = nn.Embed(config.vocab_size, config.text_width, name="token_embedding")(tokens)
        x = x + self.param("position_embedding", nn.initializers.normal(0.01),
                           (config.context_length, config.text_width))[:length]
        causal = jnp.tril(jnp.ones((length, length), bool))
        for index in range(config.text_layers):
            x = EncoderLayer(config.text_heads, config.text_mlp_dim, config.activation, config.layer_norm_eps,
                             name=f"layers_{index}")(x, causal)
        x = nn.LayerNorm(config.layer_norm_eps, name="final_norm")(x)
        end_of_text = mask.sum(axis=-1) - 1  # the tokenizer ends every prompt with the end-of-text token
        return jnp.take_along_axis(x, end_of_text[:, None, None], axis=1)[:, 0]


class CLIP(nn.Module):
    """`encode_image(images) -> [B, P]`, `encode_text(tokens, mask) -> [B, P]` (unnormalised embeddings)."""

    config: CLIPConfig = CLIPConfig()

    def setup(self):
        self.vision = VisionTower(self.config, name="vision")
        self.text = TextTower(self.config, name="text")
        self.visual_projection = nn.Dense(self.config.projection_dim, use_bias=False, name="visual_projection")
        self.text_projection = nn.Dense(self.config.projection_dim, use_bias=False, name="text_projection")
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(2.6592), ())

    def encode_image(self, images: jax.Array) -> jax.Array:
        return self.visual_projection(self.vision(images))

    def encode_text(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
        return self.text_projection(self.text(tokens, mask))

    def __call__(self, images: jax.Array, tokens: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.encode_image(images), self.encode_text(tokens, mask)


def preprocess_frames(video: jax.Array, config: CLIPConfig) -> jax.Array:
    """video: [B, T, H, W, 3] in [-1, 1] -> frames [B * T, S, S, 3] normalised for the image tower.

    Bicubic resize so the short side is S, centre crop S x S (OpenAI CLIP's preprocessing), then mean/std.
    """
    batch, frames, height, width, _ = video.shape
    size = config.image_size
    scale = size / min(height, width)
    new_height, new_width = max(size, round(height * scale)), max(size, round(width * scale))
    x = ((video.astype(jnp.float32) + 1.0) / 2.0).reshape(batch * frames, height, width, 3)
    x = jax.image.resize(x, (batch * frames, new_height, new_width, 3), "bicubic")
    top, left = (new_height - size) // 2, (new_width - size) // 2
    x = x[:, top:top + size, left:left + size]
    return (x - jnp.asarray(IMAGE_MEAN)) / jnp.asarray(IMAGE_STD)


def clip_similarity(image_embeddings: jax.Array, text_embeddings: jax.Array) -> jax.Array:
    """Cosine similarity per frame: image [B, T, P], text [B, P] -> [B, T]."""
    image = image_embeddings / jnp.linalg.norm(image_embeddings, axis=-1, keepdims=True)
    text = text_embeddings / jnp.linalg.norm(text_embeddings, axis=-1, keepdims=True)
    return jnp.einsum("btp,bp->bt", image, text)
