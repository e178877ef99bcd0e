"""Stylized generation (PAPER.md 4.1): blend a style-fine-tuned T2I model into the spatial layers.

    W_interp = alpha * W_style + (1 - alpha) * W_orig     on every spatial (T2I) parameter,
    W_interp = W_model                                     on temporal parameters (names contain "temporal").

`W_orig` is the model's own spatial weights: STUNet keeps its T2I weights frozen, so they are the original
T2I model. The paper picks alpha in [0.5, 1] by hand; any alpha in [0, 1] is accepted here.

The conditional model (paper 4.2) reads <J, C, M> (7 channels) where the T2I model reads 3: on its
`input_conv/kernel` (`[kh, kw, C_in, C_out]`) the first 3 input channels (J, the spatial T2I part) are
interpolated and the C and M channels, which the T2I model has no counterpart for, keep the model's weights.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from lumiere_jax.models import param_paths
from lumiere_jax.models.param_paths import is_temporal

Params = Any


def interpolate_spatial(params: Params, style_params: Params, alpha: float) -> Params:
    """`params` with every spatial parameter replaced by `alpha * style + (1 - alpha) * params`.

    `style_params`: a T2I parameter tree (e.g. restored with `weights.load_params(path)`); it must hold every
    spatial path of `params` with the same shape. Temporal parameters pass through unchanged.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"style alpha={alpha} must lie in [0, 1] (the paper uses 0.5 to 1)")
    flat, style = param_paths.flatten(params), param_paths.flatten(style_params)
    spatial = [path for path in flat if not is_temporal(path)]
    missing = [path for path in spatial if path not in style]
    mismatched = [f"{path}: {tuple(style[path].shape)} != {tuple(flat[path].shape)}" for path in spatial
                  if path in style and tuple(style[path].shape) != tuple(flat[path].shape)
                  and not _extra_input_channels(path, tuple(style[path].shape), tuple(flat[path].shape))]
    if missing or mismatched:
        raise ValueError(f"the style checkpoint does not match the model's spatial layers (missing {missing[:3]}, "
                         f"shape differences {mismatched[:3]}); give a T2I checkpoint of the same architecture "
                         "as the model's frozen T2I layers")
    blend = jax.jit(lambda style_weight, weight: (alpha * style_weight.astype(jnp.float32)
                                                  + (1.0 - alpha) * weight.astype(jnp.float32)).astype(weight.dtype))
    out = {}
    for path, weight in flat.items():
        if is_temporal(path):
            out[path] = weight
        else:
            style_weight = style[path]
            if isinstance(weight, jax.Array):
                style_weight = jax.device_put(style_weight, weight.sharding)
            if tuple(style_weight.shape) == tuple(weight.shape):
                out[path] = blend(style_weight, weight)
            else:  # input_conv of the conditional model: blend the J channels, keep C and M
                channels = style_weight.shape[-2]
                out[path] = jnp.concatenate(
                    [blend(style_weight, weight[..., :channels, :]), jnp.asarray(weight[..., channels:, :])], axis=-2)
    return param_paths.unflatten(out)


def _extra_input_channels(path: str, style_shape: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """True for the input convolution of a model with more input channels (axis -2) than the style model."""
    return (path.endswith("input_conv/kernel") and len(style_shape) == len(shape) >= 2
            and style_shape[:-2] == shape[:-2] and style_shape[-1] == shape[-1] and style_shape[-2] < shape[-2])
