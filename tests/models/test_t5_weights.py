"""Checkpoint loading: parity with transformers' T5EncoderModel, file formats, and error messages."""

import dataclasses
import json
import sys

import jax
import numpy as np
import pytest
import torch
from transformers import T5Config, T5EncoderModel, T5ForConditionalGeneration

from lumiere_jax.models import t5, t5_weights

HF_CONFIG = dict(
    vocab_size=384, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=1, num_heads=4,
    relative_attention_num_buckets=8, relative_attention_max_distance=12, feed_forward_proj="gated-gelu",
    dropout_rate=0.0)
LENGTHS = [20, 9, 1]
MAX_LENGTH = 20


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random values everywhere (norm scales included, which transformers initialises to one)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3 + (parameter.ndim == 1))
    return model.eval()


def inputs():
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, HF_CONFIG["vocab_size"], size=(len(LENGTHS), MAX_LENGTH)).astype(np.int32)
    mask = np.arange(MAX_LENGTH)[None, :] < np.asarray(LENGTHS)[:, None]
    tokens[~mask] = 0
    return tokens, mask


def torch_reference(encoder: torch.nn.Module) -> np.ndarray:
    tokens, mask = inputs()
    with torch.no_grad():
        out = encoder(input_ids=torch.from_numpy(tokens).long(),
                      attention_mask=torch.from_numpy(mask).long()).last_hidden_state
    return out.numpy()


def assert_matches(directory, reference: np.ndarray) -> None:
    config, params = t5_weights.load_t5_encoder(str(directory))
    tokens, mask = inputs()
    ours = np.asarray(t5.TextEncoder(config).encode(params, tokens, mask))
    np.testing.assert_allclose(ours[mask], reference[mask], atol=1e-4, rtol=1e-4)
    assert np.all(ours[~mask] == 0)


@pytest.fixture(scope="module")
def torch_encoder():
    return randomize(T5EncoderModel(T5Config(**HF_CONFIG)), seed=0)


@pytest.fixture(scope="module")
def reference(torch_encoder):
    return torch_reference(torch_encoder)


def save_torch_bin(model: torch.nn.Module, directory, num_shards: int) -> None:
    """Writes the legacy PyTorch layout: pytorch_model.bin, or shards with pytorch_model.bin.index.json.

    transformers 5 writes safetensors only, so checkpoints in the older layout are written here by hand.
    """
    model.config.save_pretrained(directory)
    state_dict = model.state_dict()
    if num_shards == 1:
        torch.save(state_dict, directory / "pytorch_model.bin")
        return
    names = list(state_dict)
    weight_map = {}
    for shard in range(num_shards):
        file_name = f"pytorch_model-{shard + 1:05d}-of-{num_shards:05d}.bin"
        shard_names = names[shard::num_shards]
        torch.save({name: state_dict[name] for name in shard_names}, directory / file_name)
        weight_map.update(dict.fromkeys(shard_names, file_name))
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))


@pytest.mark.parametrize("save, layout_file", [
    (lambda model, directory: model.save_pretrained(directory), "model.safetensors"),
    (lambda model, directory: model.save_pretrained(directory, max_shard_size="20KB"), "model.safetensors.index.json"),
    (lambda model, directory: save_torch_bin(model, directory, num_shards=1), "pytorch_model.bin"),
    (lambda model, directory: save_torch_bin(model, directory, num_shards=3), "pytorch_model.bin.index.json"),
], ids=["safetensors", "safetensors_sharded", "torch_bin", "torch_bin_sharded"])
def test_loaded_encoder_matches_transformers(torch_encoder, reference, save, layout_file, tmp_path):
    save(torch_encoder, tmp_path)
    assert (tmp_path / layout_file).is_file()
    assert_matches(tmp_path, reference)


def test_full_encoder_decoder_checkpoint_loads_encoder_only(tmp_path):
    model = randomize(T5ForConditionalGeneration(T5Config(**HF_CONFIG)), seed=1)
    model.save_pretrained(tmp_path)
    assert_matches(tmp_path, torch_reference(model.encoder))


def test_config_from_hf_reads_every_size(torch_encoder, tmp_path):
    torch_encoder.config.save_pretrained(tmp_path)
    with open(tmp_path / "config.json") as f:
        config = t5_weights.config_from_hf(json.load(f), dtype="bfloat16")
    assert config == t5.T5EncoderConfig(
        vocab_size=384, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
        relative_attention_max_distance=12, layer_norm_epsilon=1e-6, dtype="bfloat16")


def test_relu_t5_is_rejected():
    with pytest.raises(ValueError, match="feed_forward_proj='relu'"):
        t5_weights.config_from_hf({**HF_CONFIG, "feed_forward_proj": "relu"})


@pytest.fixture
def state_dict(torch_encoder):
    return {name: tensor.numpy() for name, tensor in torch_encoder.state_dict().items()}


@pytest.fixture
def config(torch_encoder):
    return t5_weights.config_from_hf(torch_encoder.config.to_dict())


def test_missing_and_unused_tensors_are_listed(state_dict, config):
    missing = "encoder.block.1.layer.1.DenseReluDense.wi_1.weight"
    del state_dict[missing]
    state_dict["encoder.block.2.layer.0.layer_norm.weight"] = np.ones(32, np.float32)
    state_dict["decoder.block.0.layer.0.layer_norm.weight"] = np.ones(32, np.float32)  # ignored on purpose
    with pytest.raises(ValueError) as error:
        t5_weights.convert_state_dict(state_dict, config)
    message = str(error.value)
    assert missing in message and "encoder.block.2.layer.0.layer_norm.weight" in message
    assert "decoder." not in message


def test_missing_embedding_is_listed(state_dict, config):
    for name in t5_weights.EMBEDDING_KEYS:
        del state_dict[name]
    with pytest.raises(ValueError, match="shared.weight or encoder.embed_tokens.weight"):
        t5_weights.convert_state_dict(state_dict, config)


def test_shape_mismatch_names_the_parameter(state_dict, config):
    with pytest.raises(ValueError, match="block_0/mlp/wi_0/kernel"):
        t5_weights.convert_state_dict(state_dict, dataclasses.replace(config, d_ff=64))


def test_converted_params_match_init_tree(state_dict, config):
    params = t5_weights.convert_state_dict(state_dict, config, param_dtype="bfloat16")
    shapes = jax.eval_shape(t5.TextEncoder(config).init, jax.random.key(0))
    assert jax.tree.structure(params) == jax.tree.structure(shapes)
    assert all(p.shape == s.shape and p.dtype == np.dtype("bfloat16")
               for p, s in zip(jax.tree.leaves(params), jax.tree.leaves(shapes)))
    # Torch Linear [out, in] -> our [in, heads, kv]: q's row for head h, channel k is input column h * d_kv + k.
    q = state_dict["encoder.block.0.layer.0.SelfAttention.q.weight"]
    np.testing.assert_array_equal(
        np.asarray(params["block_0"]["attention"]["query"]["kernel"][:, 1, 3], np.float32),
        q[1 * 8 + 3].astype("bfloat16").astype(np.float32))


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        t5_weights.load_t5_encoder(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        t5_weights.read_state_dict(str(tmp_path))


def test_torch_checkpoint_without_torch_says_how_to_fix(torch_encoder, tmp_path, monkeypatch):
    save_torch_bin(torch_encoder, tmp_path, num_shards=1)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(ImportError, match="safetensors"):
        t5_weights.read_state_dict(str(tmp_path))
