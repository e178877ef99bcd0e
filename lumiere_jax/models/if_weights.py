"""Loads a DeepFloyd IF U-Net from its diffusers layout into `IFUNet`'s parameter tree, strictly.

A downloaded IF model directory (e.g. `IF-I-XL-v1.0/`, fetched beforehand by the user, who accepts its licence)
holds `unet/config.json` and `unet/diffusion_pytorch_model.safetensors` or shards listed in
`unet/diffusion_pytorch_model.safetensors.index.json`; either the model directory or its `unet/` works here.
Every tensor of the file must land on a parameter and every parameter must come from the file: missing and
unused keys are listed by name. Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util
from safetensors import safe_open

from lumiere_jax.models.if_config import IFUNetConfig, config_from_diffusers
from lumiere_jax.models.if_unet import init_variables

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX = "diffusion_pytorch_model.safetensors.index.json"

_RES_BLOCK = {"norm_0": "norm1", "conv_0": "conv1", "conditioning": "time_emb_proj", "norm_1": "norm2",
              "conv_1": "conv2", "skip": "conv_shortcut"}
_ATTENTION = {"norm": "group_norm", "text_norm": "norm_cross", "query": "to_q", "key": "to_k", "value": "to_v",
              "text_key": "add_k_proj", "text_value": "add_v_proj", "output": "to_out.0"}
_CONDITIONING = {"timestep_mlp/dense_0": "time_embedding.linear_1", "timestep_mlp/dense_1": "time_embedding.linear_2",
                 "noise_level_mlp/dense_0": "class_embedding.linear_1",
                 "noise_level_mlp/dense_1": "class_embedding.linear_2",
                 "text_pool/norm_0": "add_embedding.norm1", "text_pool/norm_1": "add_embedding.norm2",
                 "text_pool/projection": "add_embedding.proj",
                 "text_pool/attention_pool/query": "add_embedding.pool.q_proj",
                 "text_pool/attention_pool/key": "add_embedding.pool.k_proj",
                 "text_pool/attention_pool/value": "add_embedding.pool.v_proj"}
_TOP = {"text_projection": "encoder_hid_proj", "input_conv": "conv_in", "output_norm": "conv_norm_out",
        "output_conv": "conv_out"}
_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias"}
_BLOCK = re.compile(r"(down|up)_(\d+)_(res|attention)_(\d+)|(down)_(\d+)_downsample|(up)_(\d+)_upsample"
                    r"|middle_(res|attention)_(\d+)")


def unet_directory(path: str) -> str:
    """`path` itself, or its `unet/` subfolder when `path` is a whole IF model directory."""
    nested = os.path.join(path, "unet")
    return nested if os.path.isfile(os.path.join(nested, CONFIG_FILE)) else path


def read_config(directory: str, **overrides) -> IFUNetConfig:
    """Our config from `directory`'s (or `directory/unet`'s) diffusers config.json."""
    path = os.path.join(unet_directory(directory), CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {CONFIG_FILE} in {directory!r} or its unet/: give the downloaded IF model "
                                "directory (e.g. IF-I-XL-v1.0) or its unet/ folder")
    with open(path) as f:
        return config_from_diffusers(json.load(f), **overrides)


def read_state_dict(directory: str) -> dict[str, np.ndarray]:
    """All tensors (diffusers names, torch layouts) of the U-Net weights in `directory` (or its unet/)."""
    directory = unet_directory(directory)
    single, index = os.path.join(directory, WEIGHTS_FILE), os.path.join(directory, WEIGHTS_INDEX)
    if os.path.isfile(single):
        paths = [single]
    elif os.path.isfile(index):
        with open(index) as f:
            paths = [os.path.join(directory, name) for name in sorted(set(json.load(f)["weight_map"].values()))]
    else:
        raise FileNotFoundError(f"no IF U-Net weights in {directory!r}: expected {WEIGHTS_FILE} or {WEIGHTS_INDEX} "
                                "(the safetensors files of the downloaded model; .bin files are not read)")
    tensors = {}
    for path in paths:
        with safe_open(path, framework="numpy") as reader:
            for name in reader.keys():
                tensors[name] = reader.get_tensor(name)
    return tensors


def _module_name(module_path: str, num_levels: int) -> str:
    """Our module path ('down_1_res_0/conv_0') -> diffusers' module name ('down_blocks.1.resnets.0.conv1')."""
    top, _, inner = module_path.partition("/")
    if top == "conditioning":
        return _CONDITIONING[inner]
    if top in _TOP:
        return _TOP[top]
    match = _BLOCK.fullmatch(top)
    if match is None:
        raise KeyError(module_path)
    direction, level, kind, index, down, down_level, up, up_level, middle_kind, middle_index = match.groups()
    if down:
        prefix, kind = f"down_blocks.{down_level}.downsamplers.0", "res"
    elif up:
        prefix, kind = f"up_blocks.{num_levels - 1 - int(up_level)}.upsamplers.0", "res"
    elif middle_kind:
        kind = middle_kind
        prefix = f"mid_block.{'resnets' if kind == 'res' else 'attentions'}.{middle_index}"
    else:
        block = level if direction == "down" else num_levels - 1 - int(level)
        prefix = f"{direction}_blocks.{block}.{'resnets' if kind == 'res' else 'attentions'}.{index}"
    return f"{prefix}.{(_RES_BLOCK if kind == 'res' else _ATTENTION)[inner]}"


def diffusers_name(path: tuple[str, ...], num_levels: int) -> str:
    """Our parameter path (tuple of names) -> diffusers tensor name."""
    if path[-1] == "position":
        return "add_embedding.pool.positional_embedding"
    return f"{_module_name('/'.join(path[:-1]), num_levels)}.{_LEAF[path[-1]]}"


def _to_flax(tensor: np.ndarray, leaf_name: str) -> np.ndarray:
    """Torch layout -> ours: conv [O, I, kh, kw] -> [kh, kw, I, O]; linear [O, I] -> [I, O]; position [1, D] -> [D]."""
    if leaf_name == "kernel":
        return tensor.transpose(2, 3, 1, 0) if tensor.ndim == 4 else tensor.T
    return tensor.reshape(-1) if leaf_name == "position" else tensor


def convert_state_dict(state_dict: dict[str, np.ndarray], config: IFUNetConfig, param_dtype: str = "float32"):
    """diffusers tensors -> our (image-model) params tree, with no key left over on either side.

    Raises ValueError listing missing tensors (our parameter path and the diffusers name expected), unused tensors
    of the file and shape mismatches.
    """
    image_config = dataclasses.replace(config, temporal=None)
    template = jax.eval_shape(lambda rng: init_variables(image_config, rng), jax.random.key(0))
    flat_template = traverse_util.flatten_dict(nn.unbox(template)["params"])
    num_levels = len(config.block_channels)
    params, missing, mismatched, used = {}, [], [], set()
    for path, leaf in flat_template.items():
        name = diffusers_name(path, num_levels)
        if name not in state_dict:
            missing.append(f"{'/'.join(path)} <- {name}")
            continue
        used.add(name)
        value = _to_flax(np.asarray(state_dict[name]), path[-1])
        if value.shape != leaf.shape:
            mismatched.append(f"{name}: file {tuple(state_dict[name].shape)} -> {value.shape}, model {leaf.shape}")
            continue
        params[path] = jax.numpy.asarray(value, param_dtype)
    unused = sorted(set(state_dict) - used)
    problems = [f"{label} ({len(items)}): {items}" for label, items in
                (("missing tensors", missing), ("unused tensors", unused), ("shape mismatches", mismatched)) if items]
    if problems:
        raise ValueError("the IF checkpoint does not match the model config; " + "; ".join(problems) +
                         ". Build the config from the checkpoint's config.json (if_weights.read_config)")
    return traverse_util.unflatten_dict(params)


def load_if_unet(directory: str, param_dtype: str = "float32", **config_overrides) -> tuple[IFUNetConfig, dict]:
    """(config, params) of the IF U-Net downloaded to `directory`; `config_overrides` e.g. dtype="bfloat16"."""
    config = read_config(directory, **config_overrides)
    return config, convert_state_dict(read_state_dict(directory), config, param_dtype)
