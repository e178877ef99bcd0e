"""C3D: documented shapes, converters for PyTorch and Chainer naming, parity with a torch re-implementation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lumiere_jax.evaluate import c3d
from lumiere_jax.evaluate import convert
from lumiere_jax.evaluate import networks
from lumiere_jax.evaluate import weights

CONVS = ["conv1a", "conv2a", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b"]
# 56 x 56 crops leave a 1 x 2 x 2 pool5 map (pool4 rounds 7 up to 4), so fc6's permutation is exercised.
SMALL = c3d.C3DConfig(width=1 / 16, crop=56, resize=(64, 80))


def source_state_dict(config, seed=0, chainer=False):
    """Random C3D weights in PyTorch layout ([O, I, t, h, w] convs, [O, I] linears, fc6 over [C, T, H, W])."""
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda leaf: leaf.shape, convert.abstract_variables("c3d", config)["params"])
    state = {}
    for layer in CONVS + ["fc6", "fc7", "fc8"]:
        kernel = params[layer]["kernel"]
        shape = (kernel[-1], kernel[-2], *kernel[:3]) if layer.startswith("conv") else (kernel[1], kernel[0])
        fan_in = int(np.prod(shape[1:]))
        weight_key, bias_key = (f"{layer}/W", f"{layer}/b") if chainer else (f"{layer}.weight", f"{layer}.bias")
        state[weight_key] = rng.normal(scale=(2 / fan_in) ** 0.5, size=shape).astype(np.float32)
        state[bias_key] = rng.normal(scale=0.1, size=shape[0]).astype(np.float32)
    return state


def torch_c3d(state, clip):
    """Reference: Caffe-style C3D in torch (channels first, ceil-mode pools, flatten over [C, T, H, W])."""
    t = {name.replace("/W", ".weight").replace("/b", ".bias"): torch.from_numpy(v) for name, v in state.items()}
    pools = {"conv1a": (1, 2, 2), "conv2a": (2, 2, 2), "conv3b": (2, 2, 2), "conv4b": (2, 2, 2), "conv5b": (2, 2, 2)}
    x = torch.from_numpy(np.ascontiguousarray(clip.transpose(0, 4, 1, 2, 3)))
    for layer in CONVS:
        x = F.relu(F.conv3d(x, t[f"{layer}.weight"], t[f"{layer}.bias"], padding=1))
        if layer in pools:
            x = F.max_pool3d(x, pools[layer], pools[layer], ceil_mode=True)
    x = x.flatten(1)
    x = F.relu(F.linear(x, t["fc6.weight"], t["fc6.bias"]))
    x = F.relu(F.linear(x, t["fc7.weight"], t["fc7.bias"]))
    return F.linear(x, t["fc8.weight"], t["fc8.bias"]).numpy()


def test_published_network_shapes_via_eval_shape():
    config = c3d.C3DConfig()
    assert c3d.pooled_shape(config) == (1, 4, 4, 512)
    variables = convert.abstract_variables("c3d", config)
    assert variables["params"]["fc6"]["kernel"].shape == (8192, 4096)
    assert variables["params"]["conv1a"]["kernel"].shape == (3, 3, 3, 3, 64)
    out = jax.eval_shape(lambda v, x: c3d.C3D(config).apply(v, x), variables, jnp.zeros((2, 16, 112, 112, 3)))
    assert out.shape == (2, 101)


@pytest.mark.parametrize("chainer", [False, True])
def test_converted_weights_match_torch_reference(chainer):
    state = source_state_dict(SMALL, chainer=chainer)
    flat = convert.convert_c3d(state, SMALL, mean=np.zeros(3))
    assert flat.pop("input_mean").shape == (3,)
    variables = weights.load_variables(flat, convert.abstract_variables("c3d", SMALL))
    clip = np.random.default_rng(1).normal(size=(2, 16, 56, 56, 3)).astype(np.float32)
    ours = np.asarray(jax.jit(c3d.C3D(SMALL).apply)(variables, clip))
    np.testing.assert_allclose(ours, torch_c3d(state, clip), rtol=1e-4, atol=1e-4)


def test_c3d_pytorch_aliases_and_unknown_keys():
    state = source_state_dict(SMALL)
    aliased = {name.replace("conv1a", "conv1").replace("conv2a", "conv2"): value for name, value in state.items()}
    assert set(convert.convert_c3d(aliased, SMALL, np.zeros(3))) == set(convert.convert_c3d(state, SMALL, np.zeros(3)))
    with pytest.raises(convert.ConversionError, match=r"\['conv6a.weight'\]"):
        convert.convert_c3d({**state, "conv6a.weight": np.zeros(1)}, SMALL, np.zeros(3))
    with pytest.raises(convert.ConversionError, match="--mean"):
        convert.convert_c3d(state, SMALL)


def test_preprocess_flips_to_bgr_subtracts_the_mean_and_crops():
    colour = np.array([-1.0, 0.0, 1.0], np.float32)  # RGB 0, 127.5, 255
    video = jnp.broadcast_to(colour, (1, 16, 40, 50, 3))
    mean = jnp.array([10.0, 20.0, 30.0])
    out = c3d.preprocess(video, mean, SMALL)
    assert out.shape == (1, 16, 56, 56, 3)
    np.testing.assert_allclose(np.asarray(out[0, 0, 0, 0]), [255 - 10, 127.5 - 20, 0 - 30], atol=1e-3)


def test_logits_from_file_with_full_mean_clip(tmp_path):
    state = source_state_dict(SMALL)
    mean_caffe = np.random.default_rng(2).uniform(90, 110, size=(3, 16, 64, 80)).astype(np.float32)  # [C, T, H, W]
    path = str(tmp_path / "c3d.safetensors")
    weights.save_flat(path, convert.convert_c3d(state, SMALL, mean_caffe))
    model = networks.C3DLogits.from_file(path, SMALL, batch_size=2)
    videos = [np.random.default_rng(i).integers(0, 256, size=(16, 64, 80, 3), dtype=np.uint8) for i in range(3)]
    logits = model(videos)
    clip = c3d.preprocess(jnp.asarray(networks.to_unit_range(videos)), mean_caffe.transpose(1, 2, 3, 0), SMALL)
    np.testing.assert_allclose(logits, torch_c3d(state, np.asarray(clip)), rtol=1e-4, atol=1e-3)
