"""Analytic model FLOPs: hand counts of one conv and one attention block, and XLA's cost analysis of the
un-rematted forward pass and of a frozen-spatial training gradient on the CPU backend."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from lumiere_jax.models import config as model_config
from benchmarks import model_flops as model_flops_benchmark
from lumiere_jax.models import flops as flops_lib
from lumiere_jax.models import param_paths
from lumiere_jax.models.layers import SelfAttentionBlock, conv_layer
from lumiere_jax.models.unet import UNet, example_inputs

F32 = dict(dtype=jnp.float32, param_dtype=jnp.float32)


def _xla_flops(fn, *args) -> float:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


def _layer(count: flops_lib.ModelFlops, path: str) -> flops_lib.LayerFlops:
    (layer,) = [layer for layer in count.layers if layer.path == path]
    return layer


def test_hand_counts_of_a_conv_and_an_attention_block():
    config = model_config.stunet_config("tiny")  # 32x32, channels (32, 64, 64), self-attention at level 2
    count = flops_lib.model_flops(config, batch_size=2, num_frames=8)
    # input_conv: 2 clips x 8 frames x 32 x 32 pixels x 3x3 taps x 3 -> 32 channels, 2 FLOPs per MAC.
    assert _layer(count, "input_conv").forward == 2 * (2 * 8) * 32 * 32 * 9 * 3 * 32
    # Level 2 (8x8 pixels, 64 channels, 8 / 2**2 = 2 frames): 4 projections and 2 products of 64 x 64 tokens.
    rows, tokens, width = 2 * 2, 8 * 8, 64
    attention = [layer for layer in count.layers if layer.path.startswith("down_2_self_attention_0/")]
    assert sum(layer.forward for layer in attention) == 2 * rows * (4 * tokens * width * width
                                                                     + 2 * tokens * tokens * width)
    assert _layer(count, "down_2_self_attention_0/attention/scores").forward == 2 * rows * tokens * tokens * width


def test_a_single_conv_and_attention_block_match_xla():
    x = jnp.ones((4, 16, 16, 32))
    conv = conv_layer(48, (3, 3), name="conv", **F32)
    params = conv.init(jax.random.key(0), x)
    # XLA counts the taps inside the input only: per axis 16 * 3 - 2 = 46 (one tap lost at each border),
    # and one add per output element for the bias.
    inside_taps = 2 * 4 * 46 * 46 * 32 * 48
    assert _xla_flops(conv.apply, params, x) == inside_taps + 4 * 16 * 16 * 48
    assert flops_lib._taps(16, 3, 1, 1, padding_taps=False) == 46
    assert flops_lib._taps(16, 3, 2, 1, padding_taps=False) == 3 * 8 - 1  # stride 2: one tap off the top

    # Head dim 64 as in the paper preset (1024 channels / 16 heads): softmax work per score is small beside
    # the 2 x 64 FLOPs of each score's products (with head dim 8 it adds about 13%).
    x = jnp.ones((2, 16, 16, 128))
    block = SelfAttentionBlock(num_heads=2, norm_groups=8, **F32)
    params = block.init(jax.random.key(0), x)
    tokens, width = 16 * 16, 128
    hand_attention = 2 * 2 * (4 * tokens * width * width + 2 * tokens * tokens * width)
    xla = _xla_flops(block.apply, params, x)
    # The remainder is the norm, softmax, biases and the residual: elementwise, a few % here.
    assert hand_attention <= xla <= 1.06 * hand_attention


_TINY_STUNET = model_config.stunet_config("tiny")
TINY_CASES = [
    ("t2i", model_config.t2i_config("tiny"), None),
    ("stunet", _TINY_STUNET, 8),
    ("ssr", model_config.ssr_config("tiny"), 4),
    ("stunet_text_cross_attention", dataclasses.replace(_TINY_STUNET, temporal=dataclasses.replace(
        _TINY_STUNET.temporal, text_cross_attention=True)), 8),
]


@pytest.mark.parametrize("name, config, frames", TINY_CASES, ids=[case[0] for case in TINY_CASES])
def test_forward_count_agrees_with_xla(name, config, frames):
    """XLA's count of the whole forward pass lies between our count of taps inside the input (XLA's way for
    lax convolutions) and 6% over our count with border taps (FrameConv's temporal convolutions multiply their
    zero border frames in one matmul); the rest is elementwise work (norms, SiLU, softmax, biases, residuals)
    and, for the SSR, the bilinear resize of the low-res input."""
    config = dataclasses.replace(config, remat="none", dtype="float32")
    inputs = example_inputs(config, batch_size=2, video=frames is not None)
    variables = jax.eval_shape(lambda: UNet(config).init(jax.random.key(0), **inputs))
    xla = _xla_flops(lambda v, i: UNet(config).apply(v, **i), variables, inputs)
    analytic = flops_lib.model_flops(config, 2, frames, padding_taps=False).forward
    with_border_taps = flops_lib.model_flops(config, 2, frames).forward
    assert analytic < with_border_taps
    assert analytic <= xla <= 1.06 * with_border_taps, (name, analytic, xla, with_border_taps)


def test_frozen_spatial_training_count_agrees_with_xla():
    """STUNet stage: gradients of the temporal parameters only. XLA's program (autodiff prunes the weight
    gradients of frozen layers and the input gradients nothing upstream needs) lies between our count without
    and with border taps (the comparison of benchmarks/model_flops.py, on the tiny preset)."""
    config = dataclasses.replace(model_config.stunet_config("tiny"), remat="none", dtype="float32")
    xla, _ = model_flops_benchmark.compare("tiny", batch_size=2)["train"]
    count = flops_lib.model_flops(config, 2, 8, trained=param_paths.is_temporal, padding_taps=False)
    assert count.forward < count.train < 3 * count.forward  # frozen layers are not 3x
    # XLA counts the spatial convolutions' taps inside the input, but the temporal convolutions' border taps
    # too: FrameConv multiplies zero frames as part of its one matmul (models/temporal.py).
    with_border_taps = flops_lib.model_flops(config, 2, 8, trained=param_paths.is_temporal, padding_taps=True)
    assert count.train <= xla <= 1.01 * with_border_taps.train, (count.train, xla, with_border_taps.train)
    everything = flops_lib.model_flops(config, 2, 8, padding_taps=False)
    assert count.train < everything.train
