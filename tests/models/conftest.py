"""Shared fixtures for the U-Net tests: a tiny STUNet config, cheap parameter trees and one jitted apply.

Compile time dominates these tests on CPU, so trees come from `jax.eval_shape` filled by NumPy, real Flax
init uses a cheap counter-hash PRNG (XLA:CPU compiles threefry slowly: tens of seconds for a U-Net's init),
and every forward pass goes through one jitted function so identical shapes hit the compile cache.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.extend.random as jax_random
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from lumiere_jax.models.config import TemporalConfig, UNetConfig
from lumiere_jax.models.unet import UNet, example_inputs

TEST_STUNET = UNetConfig(
    image_size=16, base_channels=16, channel_multipliers=(1, 2), num_res_blocks=1, attention_levels=(1,),
    cross_attention_levels=(0, 1), num_heads=2, norm_groups=4, embed_dim=32, text_embed_dim=16, text_length=4,
    temporal=TemporalConfig(num_frames=4, attention_blocks=2, attention_heads=2))
TEST_T2I = dataclasses.replace(TEST_STUNET, temporal=None)


def _mix(x):
    """A 32-bit integer hash (xorshift-multiply); statistical quality is irrelevant for tests."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _counter(n):
    return jnp.arange(1, n + 1, dtype=jnp.uint32) * jnp.uint32(0x9E3779B9)


_CHEAP_PRNG = jax_random.define_prng_impl(
    key_shape=(1,),
    seed=lambda seed: _mix(jnp.asarray(seed).astype(jnp.uint32).reshape(1) + jnp.uint32(0x9E3779B9)),
    split=lambda key, shape: _mix(key[0] ^ _counter(math.prod(shape))).reshape(*shape, 1),
    random_bits=lambda key, bit_width, shape: _mix(_mix(_counter(math.prod(shape)) ^ key[0]) + key[0]).astype(
        {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32}[bit_width]).reshape(shape),
    fold_in=lambda key, data: _mix(key ^ _mix(jnp.asarray(data, jnp.uint32) + jnp.uint32(0x632BE5AB))),
    name="test_counter_hash")


def cheap_key(seed: int = 0) -> jax.Array:
    return jax.random.key(seed, impl=_CHEAP_PRNG)


def abstract_variables(config: UNetConfig, video: bool | None = None, batch_size: int = 1):
    """Boxed ShapeDtypeStruct tree of `UNet(config)`'s variables (nothing allocated or compiled)."""
    inputs = example_inputs(config, batch_size, video)
    return jax.eval_shape(lambda key: UNet(config).init(key, **inputs), jax.random.key(0))


def random_params(abstract_tree, seed: int = 0):
    """Fills an (unboxed) abstract tree with random values: kernels ~ N(0, 1/fan_in), norm scales ~ 1 + N(0, 0.1^2),
    biases ~ N(0, 0.1^2), the rest N(0, 1). Zero-init and identity-init leaves become random too."""
    rng = np.random.default_rng(seed)
    filled = {}
    for path, leaf in traverse_util.flatten_dict(abstract_tree).items():
        noise = rng.standard_normal(leaf.shape).astype(np.float32)
        if path[-1] == "kernel":
            noise /= math.sqrt(math.prod(leaf.shape[:-1]))
        elif path[-1] == "scale":
            noise = 1.0 + 0.1 * noise
        elif path[-1] == "bias":
            noise *= 0.1
        filled[path] = jnp.asarray(noise, leaf.dtype)
    return traverse_util.unflatten_dict(filled)


def random_inputs(config: UNetConfig, batch_size: int, video: bool, seed: int = 0, num_frames: int | None = None):
    """Random model inputs; text mask has a mix of real and padding tokens (row 0 has a single real token)."""
    rng = np.random.default_rng(seed)
    frames = (num_frames or config.temporal.num_frames,) if video else ()
    size = config.image_size
    lengths = np.arange(batch_size) % config.text_length + 1
    inputs = dict(
        x=rng.standard_normal((batch_size, *frames, size, size, config.in_channels)),
        logsnr=rng.uniform(-10, 10, (batch_size,)),
        text_embeddings=rng.standard_normal((batch_size, config.text_length, config.text_embed_dim)),
        text_mask=np.arange(config.text_length)[None, :] < lengths[:, None],
    )
    if config.low_res_channels:
        low = config.low_res_size
        inputs["low_res"] = rng.standard_normal((batch_size, *frames, low, low, config.low_res_channels))
        inputs["noise_aug_logsnr"] = rng.uniform(-5, 5, (batch_size,))
    return {name: jnp.asarray(value, jnp.float32 if value.dtype != bool else bool) for name, value in inputs.items()}


_forward = jax.jit(lambda config, params, inputs: UNet(config).apply({"params": params}, **inputs),
                   static_argnums=0)


def forward(config: UNetConfig, params, inputs) -> jax.Array:
    """Jitted `UNet(config).apply({'params': params}, **inputs)`, compile-cached by config and shapes."""
    return _forward(config, params, inputs)


class _Helpers:
    TEST_STUNET = TEST_STUNET
    TEST_T2I = TEST_T2I
    cheap_key = staticmethod(cheap_key)
    abstract_variables = staticmethod(abstract_variables)
    random_params = staticmethod(random_params)
    random_inputs = staticmethod(random_inputs)
    forward = staticmethod(forward)
    unbox = staticmethod(nn.unbox)


@pytest.fixture(scope="session")
def unet_helpers():
    """The helpers above as a namespace (test modules are imported by path, not as a package)."""
    return _Helpers
