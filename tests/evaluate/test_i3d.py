"""I3D: documented shapes, complete mapping of pytorch-i3d state dicts, parity with a torch re-implementation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lumiere_jax.evaluate import convert
from lumiere_jax.evaluate import i3d
from lumiere_jax.evaluate import networks
from lumiere_jax.evaluate import weights

# pytorch-i3d naming, written out independently of the module.
STEM = ["Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"]
MIXED = ["Mixed_3b", "Mixed_3c", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f", "Mixed_5b", "Mixed_5c"]
BRANCHES = ["b0", "b1a", "b1b", "b2a", "b2b", "b3b"]
SMALL = i3d.I3DConfig(width=0.125, image_size=64)


def source_state_dict(config, seed=0):
    """A random pytorch-i3d state dict for `config` ([O, I, t, h, w] conv weights, BN running stats)."""
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda leaf: leaf.shape, convert.abstract_variables("i3d", config)["params"])
    state = {}
    for unit in STEM + [f"{block}.{branch}" for block in MIXED for branch in BRANCHES]:
        node = params
        for part in unit.split("."):
            node = node[part]
        t, h, w, cin, cout = node["conv"]["kernel"]
        state[f"{unit}.conv3d.weight"] = rng.normal(scale=(cin * t * h * w) ** -0.5, size=(cout, cin, t, h, w))
        state[f"{unit}.bn.weight"] = rng.uniform(0.5, 1.5, cout)
        state[f"{unit}.bn.bias"] = rng.normal(scale=0.1, size=cout)
        state[f"{unit}.bn.running_mean"] = rng.normal(scale=0.1, size=cout)
        state[f"{unit}.bn.running_var"] = rng.uniform(0.5, 2.0, cout)
        state[f"{unit}.bn.num_batches_tracked"] = np.array(7)
    _, _, _, cin, classes = params["logits"]["kernel"]
    state["logits.conv3d.weight"] = rng.normal(scale=cin ** -0.5, size=(classes, cin, 1, 1, 1))
    state["logits.conv3d.bias"] = rng.normal(size=classes)
    return {name: value.astype(np.float32) for name, value in state.items()}


def tf_same_pad(x, kernel, stride, value=0.0):
    """TF 'SAME' padding of a [B, C, T, H, W] tensor (extra padding at the end)."""
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


def torch_i3d(state, video):
    """Reference forward pass in torch (channels first), following the DeepMind network description."""
    t = {name: torch.from_numpy(value) for name, value in state.items()}

    def unit(x, name, kernel, stride=(1, 1, 1)):
        x = F.conv3d(tf_same_pad(x, kernel, stride), t[f"{name}.conv3d.weight"], stride=stride)
        x = F.batch_norm(x, t[f"{name}.bn.running_mean"], t[f"{name}.bn.running_var"], t[f"{name}.bn.weight"],
                         t[f"{name}.bn.bias"], training=False, eps=1e-3)
        return F.relu(x)

    def pool(x, kernel, stride):
        return F.max_pool3d(tf_same_pad(x, kernel, stride, value=-np.inf), kernel, stride)

    def mixed(x, name):
        b0 = unit(x, f"{name}.b0", (1, 1, 1))
        b1 = unit(unit(x, f"{name}.b1a", (1, 1, 1)), f"{name}.b1b", (3, 3, 3))
        b2 = unit(unit(x, f"{name}.b2a", (1, 1, 1)), f"{name}.b2b", (3, 3, 3))
        b3 = unit(pool(x, (3, 3, 3), (1, 1, 1)), f"{name}.b3b", (1, 1, 1))
        return torch.cat([b0, b1, b2, b3], dim=1)

    x = torch.from_numpy(np.ascontiguousarray(video.transpose(0, 4, 1, 2, 3)))
    x = pool(unit(x, "Conv3d_1a_7x7", (7, 7, 7), (2, 2, 2)), (1, 3, 3), (1, 2, 2))
    x = pool(unit(unit(x, "Conv3d_2b_1x1", (1, 1, 1)), "Conv3d_2c_3x3", (3, 3, 3)), (1, 3, 3), (1, 2, 2))
    x = mixed(mixed(x, "Mixed_3b"), "Mixed_3c")
    x = pool(x, (3, 3, 3), (2, 2, 2))
    for name in ["Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"]:
        x = mixed(x, name)
    x = mixed(mixed(pool(x, (2, 2, 2), (2, 2, 2)), "Mixed_5b"), "Mixed_5c")
    x = F.avg_pool3d(x, tuple(min(s, k) for s, k in zip(x.shape[2:], (2, 7, 7))), stride=1)
    x = F.conv3d(x, t["logits.conv3d.weight"], t["logits.conv3d.bias"])
    return x.mean(dim=(2, 3, 4)).numpy()


def test_published_network_shapes_via_eval_shape():
    variables = convert.abstract_variables("i3d", i3d.I3DConfig())
    params = variables["params"]
    assert params["Conv3d_1a_7x7"]["conv"]["kernel"].shape == (7, 7, 7, 3, 64)
    assert params["Mixed_4f"]["b1b"]["conv"]["kernel"].shape == (3, 3, 3, 160, 320)
    assert params["logits"]["kernel"].shape == (1, 1, 1, 1024, 400)  # Mixed_5c: 384 + 384 + 128 + 128
    assert variables["batch_stats"]["Mixed_5c"]["b3b"]["bn"]["var"].shape == (128,)
    out = jax.eval_shape(lambda v, x: i3d.I3D().apply(v, x), variables, jnp.zeros((2, 16, 224, 224, 3)))
    assert out.shape == (2, 400)


def test_converted_file_loads_completely_and_features_match_torch_reference(tmp_path):
    state = source_state_dict(SMALL)
    path = str(tmp_path / "i3d.safetensors")
    weights.save_flat(path, convert.convert_i3d(state))
    features = networks.I3DFeatures.from_file(path, SMALL, batch_size=2)
    rng = np.random.default_rng(1)
    videos = [rng.integers(0, 256, size=(16, 48, 40, 3), dtype=np.uint8) for _ in range(3)]
    ours = features(videos)
    assert ours.shape == (3, 400)
    resized = np.asarray(i3d.preprocess(jnp.asarray(networks.to_unit_range(videos)), SMALL))
    np.testing.assert_allclose(ours, torch_i3d(state, resized), rtol=2e-4, atol=2e-4)


def test_incomplete_or_foreign_state_dict_is_an_error_naming_the_keys():
    state = source_state_dict(SMALL)
    abstract = convert.abstract_variables("i3d", SMALL)
    missing = dict(state)
    del missing["Mixed_4d.b2b.bn.running_var"]
    with pytest.raises(ValueError, match=r"1 missing \['batch_stats:Mixed_4d/b2b/bn/var'\]"):
        weights.load_variables(convert.convert_i3d(missing), abstract)
    with pytest.raises(convert.ConversionError, match=r"\['head.fc.weight'\]"):
        convert.convert_i3d({**state, "head.fc.weight": np.zeros((2, 2))})
    foreign = {**state, "Mixed_6a.b0.conv3d.weight": np.zeros((1, 1, 1, 1, 1), np.float32)}
    with pytest.raises(ValueError, match=r"1 unused \['Mixed_6a/b0/conv/kernel'\]"):
        weights.load_variables(convert.convert_i3d(foreign), abstract)


def test_preprocess_resizes_to_the_network_size():
    video = jnp.zeros((1, 16, 32, 48, 3))
    assert i3d.preprocess(video, i3d.I3DConfig()).shape == (1, 16, 224, 224, 3)


def test_command_line_converts_a_torch_file_of_the_published_network(tmp_path):
    state = source_state_dict(i3d.I3DConfig())
    torch.save({name: torch.from_numpy(value) for name, value in state.items()}, tmp_path / "rgb_imagenet.pt")
    output = str(tmp_path / "i3d.npz")
    convert.main(["i3d", "--input", str(tmp_path / "rgb_imagenet.pt"), "--output", output])
    flat = weights.load_flat(output)
    assert len(flat) == len(state) - len([name for name in state if name.endswith("num_batches_tracked")])
    np.testing.assert_array_equal(flat["Mixed_5c/b1b/conv/kernel"],
                                  state["Mixed_5c.b1b.conv3d.weight"].transpose(2, 3, 4, 1, 0))
    np.testing.assert_array_equal(flat["batch_stats:Conv3d_1a_7x7/bn/var"], state["Conv3d_1a_7x7.bn.running_var"])
