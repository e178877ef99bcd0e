"""SR schedules: the SSR trains and samples with the resolution-shifted cosine schedule, while the noise
augmentation of its low-res input keeps its own plain cosine schedule."""

import argparse
import math

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np

import toy
from lumiere_jax import gin_cli
from lumiere_jax.diffusion import schedules
from lumiere_jax.stages import adapter as adapter_lib
from lumiere_jax.stages import factory as stages
from lumiere_jax.stages.diffusion_config import DiffusionConfig
from lumiere_jax.train import step as step_lib

T = np.linspace(0.0, 1.0, 11, dtype=np.float32)


def parse(*files, bindings=()):
    gin.clear_config()
    gin_cli.parse_gin(argparse.Namespace(gin_search_paths=[], gin_file=list(files), gin_bindings=[],
                                         gin_overrides=list(bindings)))


def test_shipped_ssr_configs_use_the_resolution_shifted_schedule():
    expected_shift = 2 * math.log(16 / 32)  # tiny SSR: 16x16 -> 32x32 frames
    try:
        parse("runs/train_ssr.gin", "runs/cpu_tiny.gin", bindings=["MODEL_DIR = 'unused'"])
        adapter = stages.unet_adapter()
        assert (adapter.sample_shape[1], adapter.low_res_size) == (32, 16)
        np.testing.assert_allclose(DiffusionConfig().schedule_fn(T) - schedules.logsnr_cosine(T),
                                   expected_shift, atol=1e-4)
        parse("sample/ssr.gin", "sample/cpu_tiny.gin")
        with gin.config_scope("ssr"):
            ssr_schedule = DiffusionConfig().schedule_fn
        np.testing.assert_allclose(ssr_schedule(T) - schedules.logsnr_cosine(T), expected_shift, atol=1e-4)
        base_schedule = DiffusionConfig().schedule_fn  # the base keeps the plain cosine schedule
        np.testing.assert_allclose(base_schedule(T), schedules.logsnr_cosine(T), atol=1e-6)
    finally:
        gin.clear_config()


def test_training_augments_low_res_on_the_plain_cosine_schedule(monkeypatch):
    """With a strongly shifted SR schedule, the augmentation levels the model is told still lie on the plain
    cosine schedule over t in [0, noise_aug_max_t]."""
    seen = []
    apply = adapter_lib.ModelAdapter.apply

    def recording_apply(self, params, z, logsnr, inputs, text_embeddings, text_mask, noise_aug_logsnr, **kwargs):
        seen.append(np.asarray(noise_aug_logsnr))
        return apply(self, params, z, logsnr, inputs, text_embeddings, text_mask, noise_aug_logsnr, **kwargs)

    monkeypatch.setattr(adapter_lib.ModelAdapter, "apply", recording_apply)
    adapter = toy.toy_adapter(stage="ssr")
    config = DiffusionConfig(schedule="shifted_cosine", schedule_kwargs={"resolution": 512},
                                      noise_aug_max_t=0.5)
    params = nn.unbox(adapter.init(jax.random.key(0)))
    video = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (256, 4, 8, 8, 3)), jnp.float32)
    inputs = adapter.inputs_from_batch({"video": video}, jax.random.key(1))
    text = jnp.zeros((256, toy.TEXT_LENGTH, 16)), jnp.ones((256, toy.TEXT_LENGTH), bool)
    step_lib.per_example_losses(adapter, config, params, inputs, *text, jnp.full((256,), 0.5), jax.random.key(2),
                                train=False)
    [aug_logsnr] = seen
    lowest = float(schedules.logsnr_cosine(np.float32(0.5)))  # = 0: the level at t = noise_aug_max_t
    assert aug_logsnr.min() >= lowest - 1e-4
    assert aug_logsnr.min() < lowest + 0.5  # levels reach down to max_t
