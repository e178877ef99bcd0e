"""The frozen text encoder of a stage: its weights, the text embeddings a model sees, and the null text.

Training, sampling, export and the text-embedding cache (data/text_cache.py) all load the encoder here, so a
random (untrained) tiny encoder is rebuilt from the run's seed exactly as the trainer drew it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from lumiere_jax.parallel import partitioning
from lumiere_jax.stages import adapter as adapter_lib
from lumiere_jax.stages import caching

Params = Any


def training_text_encoder_rng(train_seed: int) -> jax.Array:
    """The key `train.loop.train` draws a random (untrained) text encoder with: the second of its 5 splits of
    `train.seed`. Sampling and the text-embedding cache rebuild the same encoder from it."""
    return jax.random.split(jax.random.key(train_seed), 5)[1]


def frozen_text_encoder_params(text_encoder: Any, text_encoder_params_fn: Callable[[jax.Array], Params] | None,
                               train_seed: int) -> Params:
    """The frozen encoder's weights: `text_encoder_params_fn(rng)` (e.g. `factory.pretrained_text_encoder`)
    or, when None, the random init the trainer draws for `train.seed = train_seed`."""
    load = text_encoder_params_fn or _jitted_init(text_encoder.config, caching.Unhashed(text_encoder))
    return load(training_text_encoder_rng(train_seed))


def load_text_encoder_params(text_encoder: Any, text_encoder_params_fn: Callable[[jax.Array], Params] | None,
                             train_seed: int, mesh: jax.sharding.Mesh, rules) -> tuple[Params, Any]:
    """`frozen_text_encoder_params` placed on the mesh by their logical axes; returns `(params, shardings)`."""
    params = frozen_text_encoder_params(text_encoder, text_encoder_params_fn, train_seed)
    shardings = partitioning.shardings_from_logical(text_encoder.logical_partition_specs(), mesh, rules, params)
    return jax.device_put(params, shardings), shardings


@functools.lru_cache(maxsize=4)
def _jitted_init(config, text_encoder: caching.Unhashed):
    """The text encoder's random init, compiled once per encoder config in a process."""
    del config  # the cache key
    return jax.jit(text_encoder.value.init)


def encode_text(adapter: adapter_lib.ModelAdapter, text_encoder_params: Params, tokens: jax.Array | None,
                text_mask: jax.Array, cached_embeddings: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Frozen T5 embeddings `[B, L, D]` (zero at padding) and the mask `[B, L]` as bool.

    `cached_embeddings` (from a text cache, data/text_cache.py) are used as they are; the encoder then does not
    run (Imagen-style precomputed embeddings).
    """
    text_mask = text_mask.astype(bool)
    if cached_embeddings is not None:
        embed_dim = adapter.text_encoder.config.d_model
        if cached_embeddings.shape[-1] != embed_dim:
            raise ValueError(
                f"cached text_embeddings have dimension {cached_embeddings.shape[-1]} but this model's text encoder "
                f"has d_model={embed_dim}; rebuild the cache with this run's encoder "
                "(python -m lumiere_jax.data.text_cache)")
        embeddings = cached_embeddings
    else:
        embeddings = adapter.text_encoder.encode(text_encoder_params, tokens, text_mask)
    return jax.lax.stop_gradient(embeddings), text_mask


def encode_batch_text(adapter: adapter_lib.ModelAdapter, text_encoder_params: Params,
                      batch: dict) -> tuple[jax.Array, jax.Array]:
    """`encode_text` of a data batch (ARCHITECTURE.md 'Batches'): `text_tokens`, `text_mask` and, from a text
    cache, `text_embeddings`."""
    return encode_text(adapter, text_encoder_params, batch.get("text_tokens"), batch["text_mask"],
                       batch.get("text_embeddings"))


def null_text(embeddings: jax.Array, text_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The null text of classifier-free guidance for a batch shaped as `embeddings: [B, L, D]`, `text_mask:
    [B, L]`: zero embeddings with an all-False mask (what the train step's text dropout feeds the model)."""
    return jnp.zeros_like(embeddings), jnp.zeros_like(text_mask)
