"""Text-to-video and SDEdit rows reach the conditional model with C = M = 0, so conditional fine-tuning keeps a
share of unconditional examples (data/masks.py default rates): fine-tuned from a tiny base STUNet with the
shipped recipe (temporal layers and input convolution train), the conditional model's x0 error on held-out
clips with C = M = 0 at mid noise stays within 1.25x the base's (given the same extra steps)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from lumiere_jax.data import masks
from lumiere_jax.data import vocab
from lumiere_jax.models import inflate
from lumiere_jax.stages import adapter as adapter_lib
from lumiere_jax.stages import factory as stages
from lumiere_jax.stages import text as text_lib
from lumiere_jax.stages.diffusion_config import DiffusionConfig
from lumiere_jax.train import optimizer as optimizer_lib
from lumiere_jax.train import state as state_lib
from lumiere_jax.train import step as step_lib
from tiny_setup import make_adapter, one_level_config, random_params, synthetic_pool

BASE_STEPS, FINETUNE_STEPS, BATCH, POOL, HELD_OUT = 120, 60, 8, 256, 64


def train(adapter, params, trainable_mask, batches, steps, text_params, learning_rate):
    optimizer = optimizer_lib.OptimizerConfig(learning_rate=learning_rate, warmup_steps=10, decay="constant",
                                              ema_decay=0.0)
    schedule = optimizer_lib.learning_rate_schedule(optimizer, steps)
    tx = optimizer_lib.make_optimizer(optimizer, schedule)
    state = state_lib.create_train_state(*state_lib.split_params(params, trainable_mask), tx, use_ema=False)
    train_step = jax.jit(step_lib.bind_train_step(adapter, DiffusionConfig(), tx, schedule, 0.0))
    for index in range(steps):
        state, metrics = train_step(state, batches(index), text_params, jax.random.key(index))
    assert np.isfinite(float(metrics["loss"]))
    return state.params


def held_out_x0_error(adapter, params, text_params, videos, tokens, text_mask):
    """Mean squared x0 error at logsnr = 0 (mid noise) with C = M = 0 for a conditional model."""
    eps = jax.random.normal(jax.random.key(7), videos.shape)
    logsnr = jnp.zeros((len(videos),))
    z = (videos + eps) / jnp.sqrt(2.0)  # alpha = sigma = 1 / sqrt(2)
    channel_condition = None
    if adapter.stage == "conditional":
        channel_condition = jnp.zeros((*videos.shape[:-1], adapter_lib.CONDITION_CHANNELS))
    inputs = adapter_lib.ModelInputs(x0=videos, channel_condition=channel_condition)
    embeddings = adapter.text_encoder.encode(text_params, tokens, text_mask)
    x0_hat = adapter.apply(params, z, logsnr, inputs, embeddings, text_mask, None, train=False)
    return float(jnp.mean(jnp.square(x0_hat - videos)))


def test_conditional_model_keeps_text_to_video_quality():
    rates = masks.MaskRates(min_box_fraction=0.3, max_box_fraction=0.6)  # default kind rates, smaller boxes
    base = dataclasses.replace(make_adapter("stunet", one_level_config(3)), parameterization="x0")
    conditional = dataclasses.replace(make_adapter("conditional", one_level_config(7)), parameterization="x0")
    videos, captions, condition_masks = synthetic_pool(0, POOL, rates)
    tokens, text_mask = vocab.tokenize(captions, vocab.get_vocabulary(), base.text_length)
    text_params = jax.jit(base.text_encoder.init)(text_lib.training_text_encoder_rng(0))
    order = np.random.default_rng(1)
    picks = [order.choice(POOL, BATCH, replace=False) for _ in range(BASE_STEPS + FINETUNE_STEPS)]

    def base_batch(step):
        index = picks[step]
        return {"video": videos[index], "text_tokens": tokens[index], "text_mask": text_mask[index]}

    def conditional_batch(step):
        index = picks[BASE_STEPS + step]
        return {**base_batch(BASE_STEPS + step), "condition": videos[index] * condition_masks[index],
                "condition_mask": condition_masks[index]}

    base_params = train(base, random_params(base, 3, scale=0.5), None, base_batch, BASE_STEPS, text_params, 1e-2)
    widened = inflate.expand_input_channels(base_params)  # the new C, M channels start at zero (paper 4.2)
    recipe = stages.pattern_mask((".*temporal.*", "input_conv/.*"))  # runs/finetune_conditional.gin
    conditional_params = train(conditional, widened, recipe(widened), conditional_batch, FINETUNE_STEPS,
                               text_params, 2e-3)

    # The base with the same extra steps on the same clips (all parameters, as it was trained): equal compute.
    base_params = train(base, base_params, None, lambda step: base_batch(BASE_STEPS + step), FINETUNE_STEPS,
                        text_params, 2e-3)

    held_videos, held_captions, _ = synthetic_pool(1, HELD_OUT)
    held_tokens, held_mask = vocab.tokenize(held_captions, vocab.get_vocabulary(), base.text_length)
    held = (jnp.asarray(held_videos), jnp.asarray(held_tokens), jnp.asarray(held_mask))
    base_error = held_out_x0_error(base, base_params, text_params, *held)
    conditional_error = held_out_x0_error(conditional, conditional_params, text_params, *held)
    print(f"held-out x0 error with C = M = 0: base {base_error:.4f}, conditional {conditional_error:.4f}")
    assert conditional_error <= 1.25 * base_error, (conditional_error, base_error)
