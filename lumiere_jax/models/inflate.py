"""The U-Net family's weight surgery: moving weights between its variants by parameter path (paths: see
models/unet.py). The trainer's initialisation from a checkpoint (train/checkpoints.py `load_init_params`) and
these tree functions place every parameter through the one rule, `inflate_leaf`.

  inflate_leaf:           one source parameter at a target path: copied, or the input conv widened.
  inflate_t2i_params:     T2I (or image SR) tree -> STUNet (or inflated SSR) tree; temporal params keep their init.
  trainable_mask:         True on temporal params (trained), False on T2I params (frozen; paper section 2).
  expand_input_channels:  first conv 3 -> 7 input channels with zero new weights (paper 4.2: <J, C, M>).

Trees may be plain params or boxed (`nn.Partitioned`) ones straight from `init`; boxes are kept.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from lumiere_jax.models.param_paths import is_temporal

Path = tuple[str, ...]


def _unboxed(leaf: Any) -> Any:
    return leaf.unbox() if isinstance(leaf, nn.meta.AxisMetadata) else leaf


def _with_value(target: Any, value: Any) -> Any:
    """`value` in place of `target`, keeping target's box (logical axis names) if it has one."""
    return target.replace_boxed(value) if isinstance(target, nn.meta.AxisMetadata) else value


def _flatten(tree) -> dict[Path, Any]:
    return traverse_util.flatten_dict(tree)


def _name(path: Path) -> str:
    return "/".join(path)


INPUT_KERNEL = ("input_conv", "kernel")


def widens_input(path: Path | str, source_shape: tuple[int, ...], target_shape: tuple[int, ...]) -> bool:
    """Whether `inflate_leaf` widens this parameter: the input conv's kernel `[3, 3, C_in, C]` with more input
    channels in the target (paper 4.2: 3 -> 7 for <J, C, M>), all else equal."""
    path = tuple(path.split("/")) if isinstance(path, str) else path
    return (path[-2:] == INPUT_KERNEL and len(source_shape) == len(target_shape) == 4
            and source_shape[:2] == target_shape[:2] and source_shape[3] == target_shape[3]
            and source_shape[2] < target_shape[2])


def inflate_leaf(path: Path | str, value: jax.Array, target_shape: tuple[int, ...], low_res_channels: int = 0):
    """`value` (a parameter of the source model at `path`) as the target model's parameter of `target_shape`.

    Same shape: unchanged. The input conv with more input channels: the new channels get zero weights, inserted
    after the source's x channels and before its `low_res_channels` (the model concatenates [x, C, M, low-res]),
    so at init the target ignores the new inputs. Anything else is an error naming the path.
    """
    if tuple(value.shape) == tuple(target_shape):
        return value
    if not widens_input(path, tuple(value.shape), tuple(target_shape)):
        raise ValueError(f"{_name(path) if isinstance(path, tuple) else path}: source shape {tuple(value.shape)} "
                         f"cannot become {tuple(target_shape)} (only the input conv widens); the two models come "
                         "from different configs")
    x_channels = value.shape[2] - low_res_channels  # kernel: [3, 3, x (+ low-res), C]
    zeros = jnp.zeros((*value.shape[:2], target_shape[2] - value.shape[2], value.shape[3]), value.dtype)
    return jnp.concatenate([value[:, :, :x_channels], zeros, value[:, :, x_channels:]], axis=2)


def inflate_t2i_params(t2i_params, stunet_init_params, low_res_channels: int = 0):
    """Copies every T2I parameter into the STUNet tree at the same path (`inflate_leaf`: a conditional STUNet's
    input conv is widened); temporal parameters stay as initialised.

    Raises ValueError listing T2I paths absent from STUNet, non-temporal STUNet paths the T2I tree does not
    cover, and shape mismatches (e.g. a checkpoint of a different preset).
    """
    source, target = _flatten(t2i_params), _flatten(stunet_init_params)
    missing = [_name(p) for p in source if p not in target]
    uncovered = [_name(p) for p in target if p not in source and not is_temporal(p)]
    mismatched = [f"{_name(p)}: {_unboxed(source[p]).shape} vs {_unboxed(target[p]).shape}"
                  for p in source if p in target and _unboxed(source[p]).shape != _unboxed(target[p]).shape
                  and not widens_input(p, _unboxed(source[p]).shape, _unboxed(target[p]).shape)]
    problems = []
    if missing:
        problems.append(f"T2I paths missing from the STUNet tree: {missing}")
    if uncovered:
        problems.append(f"non-temporal STUNet paths absent from the T2I tree: {uncovered}")
    if mismatched:
        problems.append(f"shape mismatches (T2I vs STUNet): {mismatched}")
    if problems:
        raise ValueError("cannot inflate: the two trees come from different base architectures; build the STUNet "
                         "config from the T2I config (same channels, levels, attention). " + "; ".join(problems))
    merged = {path: _with_value(leaf, inflate_leaf(path, jnp.asarray(_unboxed(source[path]), _unboxed(leaf).dtype),
                                                   _unboxed(leaf).shape, low_res_channels))
              if path in source else leaf for path, leaf in target.items()}
    return traverse_util.unflatten_dict(merged)


def trainable_mask(params):
    """Tree of bools (same nesting as `params`): True for temporal parameters, False for the frozen T2I ones.

    Use with optax, e.g. `optax.masked(optimizer, mask)` plus freezing the rest with
    `optax.multi_transform({True: optimizer, False: optax.set_to_zero()}, mask)`.
    """
    return traverse_util.unflatten_dict({path: is_temporal(path) for path in _flatten(params)})


def expand_input_channels(params, old_in_channels: int = 3, new_in_channels: int = 7):
    """Widens `input_conv` from `old_in_channels` to `new_in_channels` x-channels, new weights zero (`inflate_leaf`).

    Input channels past `old_in_channels` are an SR model's low-res channels. The new channels sit right after
    the old x channels (before the low-res channels, if any), matching the
    model's concatenation order, so at init the model ignores C and M: output equals the old model's.
    """
    flat = _flatten(params)
    kernels = [path for path in flat if path[-2:] == INPUT_KERNEL]
    if len(kernels) != 1:
        raise ValueError(f"expected one input_conv/kernel in the tree, found {[_name(p) for p in kernels]}")
    path = kernels[0]
    kernel = _unboxed(flat[path])  # [3, 3, C_in(+low-res), C]
    low_res_channels = kernel.shape[2] - old_in_channels
    if new_in_channels <= old_in_channels or low_res_channels < 0:
        raise ValueError(f"cannot expand input_conv {kernel.shape} from {old_in_channels} to {new_in_channels} "
                         "channels; new_in_channels must exceed old_in_channels")
    target_shape = (*kernel.shape[:2], new_in_channels + low_res_channels, kernel.shape[3])
    flat[path] = _with_value(flat[path], inflate_leaf(path, kernel, target_shape, low_res_channels))
    return traverse_util.unflatten_dict(flat)
