"""The jittable train and evaluation steps (diffusion loss on the adapter's model).

One train step: encode text with the frozen T5 (params outside the optimizer), drop text for classifier-free
guidance, draw t ~ U[0, 1] per example, noise x0 (and noise-augment the SSR low-res input), regress the
parameterisation's target, then clip + AdamW + EMA. A non-finite loss or gradient leaves parameters,
optimizer state and EMA untouched; the step still counts (its batch is consumed) and the skip is recorded.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from lumiere_jax.diffusion import augmentation
from lumiere_jax.diffusion import losses
from lumiere_jax.stages import adapter as adapter_lib
from lumiere_jax.stages import text as text_lib
from lumiere_jax.stages.diffusion_config import DiffusionConfig
from lumiere_jax.train import optimizer as optimizer_lib
from lumiere_jax.train import state as state_lib


def drop_text(rng: jax.Array, embeddings: jax.Array, mask: jax.Array, rate: float) -> tuple[jax.Array, jax.Array]:
    """Replaces each example's text by the null text (zeros, all-False mask) with probability `rate`.

    `embeddings: [B, L, D]`, `mask: [B, L]` -> same shapes.
    """
    keep = jax.random.bernoulli(rng, 1.0 - rate, (embeddings.shape[0],))
    return embeddings * keep[:, None, None].astype(embeddings.dtype), mask & keep[:, None]


def per_example_losses(
    adapter: adapter_lib.ModelAdapter,
    config: DiffusionConfig,
    params: state_lib.Params,
    inputs: adapter_lib.ModelInputs,
    text_embeddings: jax.Array,
    text_mask: jax.Array,
    t: jax.Array,
    rng: jax.Array,
    train: bool,
) -> jax.Array:
    """Denoising loss per example `[B]` at diffusion times `t: [B]`."""
    noise_rng, aug_rng, dropout_rng = jax.random.split(rng, 3)
    schedule = config.schedule_fn
    x0 = inputs.x0
    eps = jax.random.normal(noise_rng, x0.shape, x0.dtype)
    logsnr = schedule(t)
    z = losses.noisy_sample(x0, eps, logsnr)
    noise_aug_logsnr = None
    if inputs.low_res is not None:
        low_res, noise_aug_logsnr = augmentation.noise_augment(
            aug_rng, inputs.low_res, max_t=config.noise_aug_max_t)  # its own schedule, not the SR's
        inputs = dataclasses.replace(inputs, low_res=low_res)

    # Rematerialisation is the model's own (`UNetConfig.remat`, per block unit).
    prediction = adapter.apply(params, z, logsnr, inputs, text_embeddings, text_mask, noise_aug_logsnr,
                               train=train, dropout_rng=dropout_rng if train else None)
    loss = losses.per_example_loss(adapter.prediction_part(prediction), x0, eps, logsnr, adapter.parameterization)
    return loss * adapter.loss_weight(logsnr)  # [B]


def all_finite(tree: Any) -> jax.Array:
    """Scalar bool: no NaN or Inf in any floating leaf (checked before every checkpoint save)."""
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _select(pred: jax.Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda n, o: jnp.where(pred, n, o), new, old)


def train_step(
    state: state_lib.TrainState,
    batch: dict,
    text_encoder_params: Any,
    rng: jax.Array,
    *,
    adapter: adapter_lib.ModelAdapter,
    config: DiffusionConfig,
    optimizer: optax.GradientTransformation,
    learning_rate: optax.Schedule,
    ema_decay: float,
) -> tuple[state_lib.TrainState, dict[str, jax.Array]]:
    """One optimisation step; `rng` is the run's base key (folded with the step, so resumption is exact)."""
    step_rng = jax.random.fold_in(rng, state.step)
    text_rng, example_rng, time_rng, loss_rng = jax.random.split(step_rng, 4)
    text_embeddings, text_mask = text_lib.encode_batch_text(adapter, text_encoder_params, batch)
    text_embeddings, text_mask = drop_text(text_rng, text_embeddings, text_mask, config.text_dropout_rate)
    inputs = adapter.inputs_from_batch(batch, example_rng)
    t = jax.random.uniform(time_rng, (inputs.x0.shape[0],), jnp.float32)

    def loss_fn(trainable):
        params = state_lib.merge_params(trainable, state.frozen_params)
        return jnp.mean(per_example_losses(
            adapter, config, params, inputs, text_embeddings, text_mask, t, loss_rng, train=True))

    loss, grads = jax.value_and_grad(loss_fn)(state.trainable_params)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable_params)
    trainable = optax.apply_updates(state.trainable_params, updates)
    ema = state.ema_params
    if ema_decay > 0:
        decay = optimizer_lib.ema_decay_at(state.step, ema_decay)
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, trainable)
    new_state = state.replace(
        step=state.step + 1,
        trainable_params=_select(finite, trainable, state.trainable_params),
        opt_state=_select(finite, opt_state, state.opt_state),
        ema_params=_select(finite, ema, state.ema_params),
        nonfinite_streak=jnp.where(finite, 0, state.nonfinite_streak + 1),
        nonfinite_total=state.nonfinite_total + (~finite).astype(jnp.int32),
    )
    metrics = {
        "loss": loss,
        "grad_norm": grad_norm,
        "learning_rate": learning_rate(state.step),
        "skipped_nonfinite": (~finite).astype(jnp.int32),
        "nonfinite_streak": new_state.nonfinite_streak,
        "params_finite": all_finite((new_state.trainable_params, new_state.ema_params)),
    }
    return new_state, metrics


def eval_step(
    params: Any,
    batch: dict,
    text_encoder_params: Any,
    rng: jax.Array,
    *,
    adapter: adapter_lib.ModelAdapter,
    config: DiffusionConfig,
    num_buckets: int,
) -> jax.Array:
    """Held-out loss per diffusion-time bucket `[num_buckets]`: bucket k draws t ~ U[k/K, (k+1)/K] per example.

    No text dropout, no model dropout; the whole batch is evaluated in every bucket.
    """
    text_embeddings, text_mask = text_lib.encode_batch_text(adapter, text_encoder_params, batch)
    example_rng, rng = jax.random.split(rng)
    inputs = adapter.inputs_from_batch(batch, example_rng)
    batch_size = inputs.x0.shape[0]

    def bucket_loss(bucket):
        bucket_rng = jax.random.fold_in(rng, bucket)
        time_rng, loss_rng = jax.random.split(bucket_rng)
        t = (bucket + jax.random.uniform(time_rng, (batch_size,), jnp.float32)) / num_buckets
        return jnp.mean(per_example_losses(
            adapter, config, params, inputs, text_embeddings, text_mask, t, loss_rng, train=False))

    return jnp.stack([bucket_loss(bucket) for bucket in range(num_buckets)])


def bind_train_step(adapter, config, optimizer, learning_rate, ema_decay) -> Callable:
    """`train_step` with its static arguments bound: `(state, batch, text_encoder_params, rng) -> (state, metrics)`."""
    return functools.partial(train_step, adapter=adapter, config=config, optimizer=optimizer,
                             learning_rate=learning_rate, ema_decay=ema_decay)
