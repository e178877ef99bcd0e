"""Loads T5 v1.1 / ByT5 encoder weights from a Hugging Face model directory into `t5.T5Encoder`'s tree.

Reads `config.json` and one of: `model.safetensors`, `model.safetensors.index.json` (sharded),
`pytorch_model.bin` or `pytorch_model.bin.index.json` (these two need torch). Only encoder tensors are
read; decoder and LM-head tensors of a full encoder-decoder checkpoint are skipped on purpose.
Nothing is downloaded: the directory must already hold the files. `save_t5_encoder` writes the same layout
(config.json + model.safetensors, encoder tensors only); the package ships one such directory, the tiny runs'
caption encoder, loaded by name: `load_t5_encoder(CAPTION_ENCODER)`.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping

import jax
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from lumiere_jax.models import t5

# Parts of a full T5ForConditionalGeneration checkpoint the text encoder does not use.
IGNORED_PREFIXES = ("decoder.", "lm_head.")
EMBEDDING_KEYS = ("shared.weight", "encoder.embed_tokens.weight")  # tied in Hugging Face; either may be saved
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"
CAPTION_ENCODER = "caption_t5_tiny"
SHIPPED_ENCODERS: dict[str, str] = {
    CAPTION_ENCODER: os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", CAPTION_ENCODER),
}


def resolve_directory(directory: str) -> str:
    """A shipped encoder's folder for its name (`SHIPPED_ENCODERS`); any other value is a path, returned as is."""
    return SHIPPED_ENCODERS.get(directory, directory)


def config_from_hf(hf_config: Mapping, dtype: str = "float32") -> t5.T5EncoderConfig:
    """Builds the encoder config from a Hugging Face T5 `config.json` dict (T5 v1.1 / ByT5 only)."""
    feed_forward = hf_config.get("feed_forward_proj", "relu")
    if feed_forward not in ("gated-gelu", "gated-gelu_new"):
        raise ValueError(
            f"config.json has feed_forward_proj={feed_forward!r}; this encoder implements T5 v1.1 / ByT5 "
            "('gated-gelu'). Original T5 checkpoints (relu MLP) are not supported: use a T5 v1.1 checkpoint")
    return t5.T5EncoderConfig(
        vocab_size=hf_config["vocab_size"],
        d_model=hf_config["d_model"],
        d_kv=hf_config["d_kv"],
        d_ff=hf_config["d_ff"],
        num_layers=hf_config["num_layers"],
        num_heads=hf_config["num_heads"],
        relative_attention_num_buckets=hf_config.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=hf_config.get("relative_attention_max_distance", 128),
        layer_norm_epsilon=hf_config.get("layer_norm_epsilon", 1e-6),
        dtype=dtype,
    )


def _is_encoder_key(name: str) -> bool:
    return not name.startswith(IGNORED_PREFIXES)


def _read_safetensors(paths: list[str]) -> dict[str, np.ndarray]:
    tensors = {}
    for path in paths:
        with safe_open(path, framework="numpy") as reader:
            for name in reader.keys():
                if _is_encoder_key(name):  # skip decoder tensors without reading them
                    tensors[name] = reader.get_tensor(name)
    return tensors


def _read_torch(paths: list[str]) -> dict[str, np.ndarray]:
    try:
        import torch  # noqa: PLC0415 -- optional: only .bin checkpoints need it
    except ImportError as error:
        raise ImportError(
            f"reading {paths[0]!r} needs PyTorch, which is not installed; install torch, or convert the "
            "checkpoint to model.safetensors (e.g. with transformers' save_pretrained(safe_serialization=True))"
        ) from error
    tensors = {}
    for path in paths:
        state_dict = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        for name, tensor in state_dict.items():
            if _is_encoder_key(name):
                if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: go through float32
                    tensor = tensor.float()
                tensors[name] = tensor.numpy()
    return tensors


def _shard_paths(directory: str, index_file: str) -> list[str]:
    with open(os.path.join(directory, index_file)) as f:
        weight_map = json.load(f)["weight_map"]
    return [os.path.join(directory, name) for name in sorted(set(weight_map.values()))]


def read_state_dict(directory: str) -> dict[str, np.ndarray]:
    """Reads the encoder tensors (torch names, torch layouts) of the checkpoint in `directory`."""
    def exists(name: str) -> bool:
        return os.path.isfile(os.path.join(directory, name))

    if exists(SAFETENSORS_FILE):
        return _read_safetensors([os.path.join(directory, SAFETENSORS_FILE)])
    if exists(SAFETENSORS_INDEX):
        return _read_safetensors(_shard_paths(directory, SAFETENSORS_INDEX))
    if exists(TORCH_FILE):
        return _read_torch([os.path.join(directory, TORCH_FILE)])
    if exists(TORCH_INDEX):
        return _read_torch(_shard_paths(directory, TORCH_INDEX))
    raise FileNotFoundError(
        f"no T5 weights in {directory!r}: expected one of {SAFETENSORS_FILE}, {SAFETENSORS_INDEX}, "
        f"{TORCH_FILE}, {TORCH_INDEX} (a Hugging Face model directory, downloaded beforehand)")


def _torch_names(config: t5.T5EncoderConfig) -> dict[tuple[str, ...], str]:
    """Our parameter path -> Hugging Face tensor name (the embedding is handled separately)."""
    names = {
        ("relative_position_bias", "embedding"): "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        ("final_norm", "scale"): "encoder.final_layer_norm.weight",
    }
    for i in range(config.num_layers):
        block, prefix = f"block_{i}", f"encoder.block.{i}.layer"
        for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o")):
            names[(block, "attention", ours, "kernel")] = f"{prefix}.0.SelfAttention.{theirs}.weight"
        names[(block, "attention_norm", "scale")] = f"{prefix}.0.layer_norm.weight"
        for dense in ("wi_0", "wi_1", "wo"):
            names[(block, "mlp", dense, "kernel")] = f"{prefix}.1.DenseReluDense.{dense}.weight"
        names[(block, "mlp_norm", "scale")] = f"{prefix}.1.layer_norm.weight"
    return names


def _to_flax_layout(path: tuple[str, ...], tensor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Torch Linear weights are [out, in]; our kernels are [in, out] with the attention heads split out."""
    if path[-1] == "kernel":
        tensor = tensor.T
    merged = shape
    if len(shape) == 3:  # attention kernels: [embed, heads, kv], or [heads, kv, embed] for the output
        merged = (shape[0] * shape[1], shape[2]) if path[-2] == "out" else (shape[0], shape[1] * shape[2])
    if tensor.shape != merged:
        raise ValueError(
            f"{'/'.join(path)}: checkpoint tensor of shape {tensor.shape} (after transposing torch's [out, in]) "
            f"does not match the expected {merged}; the config.json does not belong to these weights")
    return tensor.reshape(shape)


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray], config: t5.T5EncoderConfig, param_dtype: str = "float32",
) -> t5.Params:
    """Maps Hugging Face encoder tensors onto `T5Encoder`'s parameter tree (numpy arrays of `param_dtype`).

    Raises a ValueError listing missing and unused tensor names; decoder/LM-head names are ignored.
    """
    shapes = jax.eval_shape(t5.TextEncoder(config).init, jax.random.key(0))  # [ShapeDtypeStruct] tree
    names = _torch_names(config)
    embedding_key = next((key for key in EMBEDDING_KEYS if key in state_dict), None)
    used = set(names.values()) | set(EMBEDDING_KEYS)
    missing = sorted(name for name in names.values() if name not in state_dict)
    if embedding_key is None:
        missing.append(" or ".join(EMBEDDING_KEYS))
    unused = sorted(name for name in state_dict if name not in used and _is_encoder_key(name))
    if missing or unused:
        raise ValueError(
            f"checkpoint does not match a {config.num_layers}-layer T5 v1.1 encoder: missing tensors {missing}, "
            f"unused tensors {unused}; check that config.json belongs to these weights")
    names[("token_embedding", "embedding")] = embedding_key

    def convert(path, shape: jax.ShapeDtypeStruct) -> np.ndarray:
        keys = tuple(entry.key for entry in path)
        tensor = np.asarray(state_dict[names[keys]])
        return _to_flax_layout(keys, tensor, shape.shape).astype(param_dtype)

    return jax.tree_util.tree_map_with_path(convert, shapes)


def load_t5_encoder(
    directory: str, dtype: str = "float32", param_dtype: str = "float32",
) -> tuple[t5.T5EncoderConfig, t5.Params]:
    """Loads `(config, params)` from a Hugging Face T5 v1.1 / ByT5 directory (config.json + weights).

    `dtype` is the activation dtype stored in the config; `param_dtype` the dtype of the returned arrays
    (bfloat16 halves host memory for T5-XXL's 4.7B encoder parameters).
    """
    directory = resolve_directory(directory)
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            f"{config_path!r} does not exist; point to a Hugging Face T5 v1.1 / ByT5 model directory "
            f"holding config.json and the weights, or name a shipped encoder ({sorted(SHIPPED_ENCODERS)})")
    with open(config_path) as f:
        config = config_from_hf(json.load(f), dtype=dtype)
    return config, convert_state_dict(read_state_dict(directory), config, param_dtype)


def config_to_hf(config: t5.T5EncoderConfig) -> dict:
    """The Hugging Face `config.json` of an encoder config (inverse of `config_from_hf`)."""
    return {"model_type": "t5", "architectures": ["T5EncoderModel"], "feed_forward_proj": "gated-gelu",
            "vocab_size": config.vocab_size, "d_model": config.d_model, "d_kv": config.d_kv, "d_ff": config.d_ff,
            "num_layers": config.num_layers, "num_heads": config.num_heads,
            "relative_attention_num_buckets": config.relative_attention_num_buckets,
            "relative_attention_max_distance": config.relative_attention_max_distance,
            "layer_norm_epsilon": config.layer_norm_epsilon, "is_encoder_decoder": False, "use_cache": False,
            "pad_token_id": 0, "eos_token_id": 1}


def to_state_dict(params: t5.Params, config: t5.T5EncoderConfig) -> dict[str, np.ndarray]:
    """`T5Encoder` parameters -> Hugging Face encoder tensors (torch names and layouts; inverse of
    `convert_state_dict`), float32."""
    names = _torch_names(config)
    tensors = {"shared.weight": np.asarray(params["token_embedding"]["embedding"], np.float32)}
    for path, name in names.items():
        value = np.asarray(functools.reduce(lambda tree, key: tree[key], path, params), np.float32)
        if path[-1] == "kernel":
            value = value.reshape(-1, value.shape[-1]) if path[-2] == "out" else value.reshape(value.shape[0], -1)
            value = value.T  # torch Linear: [out, in]
        tensors[name] = np.ascontiguousarray(value)
    return tensors


def save_t5_encoder(directory: str, config: t5.T5EncoderConfig, params: t5.Params) -> None:
    """Writes `config.json` and `model.safetensors` (encoder tensors only) that `load_t5_encoder` reads."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as file:
        json.dump(config_to_hf(config), file, indent=2, sort_keys=True)
        file.write("\n")
    save_file(to_state_dict(params, config), os.path.join(directory, SAFETENSORS_FILE))
