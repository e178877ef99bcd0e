"""Converters from the public metric-network checkpoints to our weights files (run once, offline).

    python -m lumiere_jax.evaluate.convert i3d  --input rgb_imagenet.pt   --output i3d.safetensors
    python -m lumiere_jax.evaluate.convert c3d  --input c3d_ucf101.npz    --output c3d.safetensors [--mean mean.npy]
    python -m lumiere_jax.evaluate.convert clip --input model.safetensors --output clip.safetensors \\
      --hf_config config.json

Inputs are state dicts as .safetensors, .npz (e.g. Chainer) or .pt/.pth (needs torch). Source naming:
  i3d:  the PyTorch port `pytorch-i3d` of DeepMind's Kinetics-400 I3D (the FVD network):
        `<unit>.conv3d.weight [O, I, t, h, w]`, `<unit>.bn.{weight, bias, running_mean, running_var}` for units
        Conv3d_1a_7x7, Conv3d_2b_1x1, Conv3d_2c_3x3 and Mixed_{3b,3c,4b..4f,5b,5c}.{b0, b1a, b1b, b2a, b2b, b3b};
        `logits.conv3d.{weight, bias}`. (`num_batches_tracked` is ignored.)
  c3d:  the UCF101-finetuned C3D of the video IS: `<layer>.weight`/`.bias` (PyTorch) or `<layer>/W`/`/b` (Chainer)
        for conv1a, conv2a, conv3a, conv3b, conv4a, conv4b, conv5a, conv5b [O, I, t, h, w], fc6, fc7, fc8 [O, I]
        (c3d-pytorch's conv1, conv2 are accepted for conv1a, conv2a). fc6 reads the pooled map flattened in
        [C, T, H, W] order and is permuted to our [T, H, W, C]. The mean clip subtracted from inputs comes
        from `--mean` (or an `input_mean` entry) in Caffe layout [3, T, H, W] or [3], in the network's channel order.
  clip: HF `CLIPModel` (`vision_model.*`, `text_model.*`, `visual_projection`, `text_projection`, `logit_scale`)
        plus its config.json; our config is written next to the output as `<output stem>.json`.
Outputs: flat `{our path: array}` files (see weights.py), checked against the model before they are written.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lumiere_jax.evaluate import c3d
from lumiere_jax.evaluate import clip
from lumiere_jax.evaluate import i3d
from lumiere_jax.evaluate import weights

C3D_MEAN_KEY = "input_mean"


class ConversionError(ValueError):
    """A source checkpoint has names or shapes the converter does not know."""


def _conv3d_kernel(weight: np.ndarray) -> np.ndarray:
    return np.transpose(weight, (2, 3, 4, 1, 0))  # [O, I, t, h, w] -> [t, h, w, I, O]


def _apply_rules(source: dict[str, np.ndarray], rules: Sequence[tuple[str, Callable]], ignore: str) -> dict:
    """Maps every source key through the first rule whose regex fully matches; unknown keys are an error."""
    converted, unknown = {}, []
    for name, value in source.items():
        if re.fullmatch(ignore, name):
            continue
        for pattern, rule in rules:
            match = re.fullmatch(pattern, name)
            if match:
                target, array = rule(match, np.asarray(value))
                converted[target] = array
                break
        else:
            unknown.append(name)
    if unknown:
        raise ConversionError(f"{len(unknown)} source keys have no rule: {sorted(unknown)}; "
                              "is this the checkpoint the converter documents?")
    return converted


def _i3d_unit(match: re.Match) -> str:
    return match.group(1).replace(".", "/")


_I3D_UNIT = r"(Conv3d_\w+|Mixed_\w+\.b\w+)"
I3D_RULES: tuple[tuple[str, Callable], ...] = (
    (_I3D_UNIT + r"\.conv3d\.weight", lambda m, v: (f"{_i3d_unit(m)}/conv/kernel", _conv3d_kernel(v))),
    (_I3D_UNIT + r"\.bn\.weight", lambda m, v: (f"{_i3d_unit(m)}/bn/scale", v)),
    (_I3D_UNIT + r"\.bn\.bias", lambda m, v: (f"{_i3d_unit(m)}/bn/bias", v)),
    (_I3D_UNIT + r"\.bn\.running_mean", lambda m, v: (f"batch_stats:{_i3d_unit(m)}/bn/mean", v)),
    (_I3D_UNIT + r"\.bn\.running_var", lambda m, v: (f"batch_stats:{_i3d_unit(m)}/bn/var", v)),
    (r"logits\.conv3d\.weight", lambda m, v: ("logits/kernel", _conv3d_kernel(v))),
    (r"logits\.conv3d\.bias", lambda m, v: ("logits/bias", v)),
)


def convert_i3d(source: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """pytorch-i3d state dict -> our I3D variables (flat)."""
    return _apply_rules(source, I3D_RULES, ignore=r".*num_batches_tracked")


_C3D_ALIASES = {"conv1": "conv1a", "conv2": "conv2a"}
_C3D_LAYERS = (*c3d.CONV_CHANNELS, *c3d.FC_FEATURES, "fc8")


def convert_c3d(source: dict[str, np.ndarray], config: c3d.C3DConfig = c3d.C3DConfig(),
                mean: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """C3D state dict (PyTorch or Chainer naming) -> our C3D params (flat) plus `input_mean` ([T, H, W, 3] or [3])."""
    frames, height, width, channels = c3d.pooled_shape(config)
    converted, unknown = {}, []
    for name, value in source.items():
        value = np.asarray(value)
        if name == C3D_MEAN_KEY:
            mean = value if mean is None else mean
            continue
        match = re.fullmatch(r"(\w+)(\.weight|/W|\.bias|/b)", name)
        layer = _C3D_ALIASES.get(match.group(1), match.group(1)) if match else None
        if layer not in _C3D_LAYERS:
            unknown.append(name)
            continue
        if name.endswith(("bias", "/b")):
            converted[f"{layer}/bias"] = value
        elif layer.startswith("conv"):
            converted[f"{layer}/kernel"] = _conv3d_kernel(value)
        elif layer == "fc6":
            outputs = value.shape[0]
            if value.shape[1] != channels * frames * height * width:
                raise ConversionError(f"fc6 weight {value.shape} does not read a {channels}x{frames}x{height}x"
                                      f"{width} pool5 map; use the C3DConfig the checkpoint was trained with")
            kernel = value.reshape(outputs, channels, frames, height, width).transpose(2, 3, 4, 1, 0)
            converted["fc6/kernel"] = kernel.reshape(-1, outputs)
        else:
            converted[f"{layer}/kernel"] = value.T
    if unknown:
        raise ConversionError(f"{len(unknown)} source keys have no rule: {sorted(unknown)}; expected C3D layers "
                              "conv1a..conv5b, fc6..fc8")
    if mean is None:
        raise ConversionError("C3D needs the mean clip its inputs were normalised with: pass --mean (a .npy in "
                              "Caffe layout [3, T, H, W] or [3])")
    mean = np.asarray(mean, np.float32)
    if mean.ndim == 5 and mean.shape[0] == 1:  # a saved batch of one mean clip
        mean = mean[0]
    if mean.ndim not in (1, 4) or mean.shape[0] != 3:
        raise ConversionError(f"mean of shape {mean.shape}: expected Caffe layout [3, T, H, W] or [3]")
    converted[C3D_MEAN_KEY] = mean if mean.ndim == 1 else mean.transpose(1, 2, 3, 0)
    return converted


_CLIP_LAYER_PARTS = {"self_attn.q_proj": "attention/query", "self_attn.k_proj": "attention/key",
                     "self_attn.v_proj": "attention/value", "self_attn.out_proj": "attention/out",
                     "layer_norm1": "norm_1", "layer_norm2": "norm_2", "mlp.fc1": "fc_1", "mlp.fc2": "fc_2"}
_TOWERS = {"vision_model": "vision", "text_model": "text"}


def _clip_layer(match: re.Match, value: np.ndarray) -> tuple[str, np.ndarray]:
    tower, index, part, kind = match.groups()
    prefix = f"{_TOWERS[tower]}/layers_{index}/{_CLIP_LAYER_PARTS[part]}"
    if part.startswith("layer_norm"):
        return f"{prefix}/{'scale' if kind == 'weight' else 'bias'}", value
    return f"{prefix}/{'kernel' if kind == 'weight' else 'bias'}", value.T if kind == "weight" else value


def _norm(target: str) -> Callable:
    return lambda m, v: (f"{target}/{'scale' if m.group(1) == 'weight' else 'bias'}", v)


CLIP_RULES: tuple[tuple[str, Callable], ...] = (
    (r"(vision_model|text_model)\.encoder\.layers\.(\d+)\.(" + "|".join(map(re.escape, _CLIP_LAYER_PARTS))
     + r")\.(weight|bias)", _clip_layer),
    (r"vision_model\.embeddings\.class_embedding", lambda m, v: ("vision/class_embedding", v)),
    (r"vision_model\.embeddings\.patch_embedding\.weight",
     lambda m, v: ("vision/patch_embed/kernel", v.transpose(2, 3, 1, 0))),
    (r"vision_model\.embeddings\.position_embedding\.weight", lambda m, v: ("vision/position_embedding", v)),
    (r"vision_model\.pre_layrnorm\.(weight|bias)", _norm("vision/pre_norm")),
    (r"vision_model\.post_layernorm\.(weight|bias)", _norm("vision/post_norm")),
    (r"text_model\.embeddings\.token_embedding\.weight", lambda m, v: ("text/token_embedding/embedding", v)),
    (r"text_model\.embeddings\.position_embedding\.weight", lambda m, v: ("text/position_embedding", v)),
    (r"text_model\.final_layer_norm\.(weight|bias)", _norm("text/final_norm")),
    (r"(visual|text)_projection\.weight", lambda m, v: (f"{m.group(1)}_projection/kernel", v.T)),
    (r"logit_scale", lambda m, v: ("logit_scale", v.reshape(()))),
)


def convert_clip(source: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """HF CLIPModel state dict -> our CLIP params (flat)."""
    return _apply_rules(source, CLIP_RULES, ignore=r".*position_ids")


def clip_config_from_hf(hf_config: dict) -> clip.CLIPConfig:
    """Our CLIPConfig from an HF CLIPModel config.json."""
    vision, text = hf_config["vision_config"], hf_config["text_config"]
    if vision.get("hidden_act", "quick_gelu") != text.get("hidden_act", "quick_gelu"):
        raise ConversionError("the vision and text towers use different activations; not supported")
    return clip.CLIPConfig(
        image_size=vision["image_size"], patch_size=vision["patch_size"], vision_width=vision["hidden_size"],
        vision_layers=vision["num_hidden_layers"], vision_heads=vision["num_attention_heads"],
        vision_mlp_dim=vision["intermediate_size"], vocab_size=text["vocab_size"],
        context_length=text["max_position_embeddings"], text_width=text["hidden_size"],
        text_layers=text["num_hidden_layers"], text_heads=text["num_attention_heads"],
        text_mlp_dim=text["intermediate_size"], projection_dim=hf_config["projection_dim"],
        activation=text.get("hidden_act", "quick_gelu"), layer_norm_eps=text.get("layer_norm_eps", 1e-5))


def abstract_variables(kind: str, config) -> dict:
    """Shapes of a network's variables, without computing anything."""
    if kind == "i3d":
        video = jnp.zeros((1, config.num_frames, config.image_size, config.image_size, 3))
        return jax.eval_shape(i3d.I3D(config).init, jax.random.key(0), video)
    if kind == "c3d":
        clip_input = jnp.zeros((1, config.num_frames, config.crop, config.crop, 3))
        return jax.eval_shape(c3d.C3D(config).init, jax.random.key(0), clip_input)
    if kind == "clip":
        images = jnp.zeros((1, config.image_size, config.image_size, 3))
        tokens = jnp.zeros((1, config.context_length), jnp.int32)
        return jax.eval_shape(clip.CLIP(config).init, jax.random.key(0), images, tokens, tokens > 0)
    raise ValueError(f"unknown network {kind!r}; use i3d, c3d or clip")


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """A checkpoint's arrays by name: .safetensors / .npz directly, .pt / .pth through torch."""
    if path.endswith((".pt", ".pth", ".bin")):
        try:
            import torch  # noqa: PLC0415 -- optional: only .pt/.pth/.bin inputs need it
        except ImportError:
            raise ConversionError(f"reading {path} needs torch (pip install torch), or re-save it as "
                                  ".safetensors / .npz") from None
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        return {name: tensor.float().numpy() for name, tensor in state.items()}
    return weights.load_flat(path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("network", choices=("i3d", "c3d", "clip"))
    parser.add_argument("--input", required=True, help="source checkpoint (.pt/.pth/.bin, .safetensors, .npz)")
    parser.add_argument("--output", required=True, help="our weights file (.safetensors or .npz)")
    parser.add_argument("--hf_config", help="clip: the HF CLIPModel config.json")
    parser.add_argument("--mean", help="c3d: .npy mean clip, Caffe layout [3, T, H, W] or [3]")
    args = parser.parse_args(argv)
    source = read_state_dict(args.input)
    if args.network == "i3d":
        config, flat = i3d.I3DConfig(), convert_i3d(source)
    elif args.network == "c3d":
        config = c3d.C3DConfig()
        flat = convert_c3d(source, config, np.load(args.mean) if args.mean else None)
    else:
        if not args.hf_config:
            parser.error("clip needs --hf_config (the config.json of the HF CLIPModel)")
        with open(args.hf_config) as file:
            config = clip_config_from_hf(json.load(file))
        flat = convert_clip(source)
        config.to_json(os.path.splitext(args.output)[0] + ".json")
    variables = {name: value for name, value in flat.items() if name != C3D_MEAN_KEY}
    weights.load_variables(variables, abstract_variables(args.network, config), what=f"converted {args.input}")
    weights.save_flat(args.output, flat)
    print(f"wrote {len(flat)} arrays to {args.output}")


if __name__ == "__main__":
    main()
