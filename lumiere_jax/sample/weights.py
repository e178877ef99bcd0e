"""Model weights for sampling: parameters only (EMA by default) from a training or an inference checkpoint.

A training checkpoint (`train/checkpoints.py`: `MODEL_DIR/checkpoints/<step>/{state, meta}`) holds the whole
train state; only `frozen_params` plus `ema_params` (or `trainable_params`) are read, straight onto the
target shardings, so optimizer state is never loaded. An inference checkpoint (written by
`lumiere_jax.export`) is a folder with `inference_checkpoint.json` and the parameter tree in `params/`.
Either is accepted wherever a checkpoint path is asked for: a run folder (its newest step), its
`checkpoints/` folder, a step folder, or an inference checkpoint folder, local or `gs://` (Orbax reads the
arrays; everything else goes through lumiere_jax/storage.py).
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp

from lumiere_jax import storage
from lumiere_jax.models import param_paths
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.parallel import partitioning
from lumiere_jax.stages import adapter as adapter_lib
from lumiere_jax.stages import caching
from lumiere_jax.stages import checkpoint_layout

INFERENCE_MANIFEST = "inference_checkpoint.json"
INFERENCE_FORMAT = "lumiere_jax.inference_checkpoint/1"
PARAMS_ITEM = "params"

Params = Any


def is_inference_checkpoint(path: str) -> bool:
    return storage.isfile(storage.join(path, INFERENCE_MANIFEST))


def abstract_params(adapter: adapter_lib.ModelAdapter, mesh: jax.sharding.Mesh,
                    rules=mesh_lib.LOGICAL_AXIS_RULES) -> Params:
    """The model's parameter tree as ShapeDtypeStructs carrying the shardings of its logical axes on `mesh`."""
    return _abstract_params(caching.adapter_key(adapter), mesh, tuple(rules), caching.Unhashed(adapter))


@functools.lru_cache(maxsize=8)
def _abstract_params(key, mesh: jax.sharding.Mesh, rules: tuple, adapter: caching.Unhashed) -> Params:
    del key  # the cache key
    adapter = adapter.value
    with mesh_lib.mesh_context(mesh, rules):
        init = functools.partial(adapter.init, batch_size=mesh_lib.data_axis_size(mesh))
        rng = jax.random.key(0)
        boxed = jax.eval_shape(init, rng)
        abstract = jax.eval_shape(lambda key: nn.unbox(init(key)), rng)
        shardings = partitioning.shardings_from_logical(partitioning.logical_specs(boxed), mesh, rules, abstract)
    return jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                        abstract, shardings)


def _training_sources(step_dir: str, use_ema: bool) -> tuple[dict[str, tuple[str, ...]], dict[str, Any], str]:
    """`{param path: key path in the saved state}`, `{param path: stored metadata}` and which weights."""
    tree = ocp.PyTreeCheckpointer().metadata(storage.join(step_dir, "state")).item_metadata.tree
    has_ema = bool(param_paths.flatten(tree.get("ema_params") or {}))
    groups = ["frozen_params", "ema_params" if use_ema and has_ema else "trainable_params"]
    if use_ema and not has_ema:
        logging.warning("%s has no EMA parameters (trained with ema_decay=0); using the raw trainable ones", step_dir)
    keys, leaves = {}, {}
    for group in groups:
        for path, leaf in param_paths.flatten(tree.get(group) or {}).items():
            keys[path] = ("state", group, *path.split("/"))
            leaves[path] = leaf
    return keys, leaves, "ema" if groups[1] == "ema_params" else "raw"


def _inference_sources(path: str) -> tuple[dict[str, tuple[str, ...]], dict[str, Any]]:
    tree = ocp.PyTreeCheckpointer().metadata(storage.join(path, PARAMS_ITEM)).item_metadata.tree
    flat = param_paths.flatten(tree)
    return {name: (PARAMS_ITEM, *name.split("/")) for name in flat}, flat


def describe(path: str, use_ema: bool = True) -> dict:
    """Where weights come from: `{"kind", "source", "step", "weights"}` (no array is read)."""
    if is_inference_checkpoint(path):
        manifest = storage.read_json(storage.join(path, INFERENCE_MANIFEST))
        return {"kind": "inference", "source": storage.normalize(path), "step": manifest.get("step"),
                "weights": manifest.get("weights")}
    step_dir = checkpoint_layout.resolve_step_directory(path)
    _, _, weights = _training_sources(step_dir, use_ema)
    return {"kind": "training", "source": step_dir, "step": int(os.path.basename(step_dir)), "weights": weights}


def trained_model_name(info: dict) -> str | None:
    """The adapter name a checkpoint described by `describe` was saved with (None where not recorded)."""
    if info["kind"] == "inference":
        return storage.read_json(storage.join(info["source"], INFERENCE_MANIFEST)).get("model_name")
    meta_file = storage.join(info["source"], "meta", "metadata")
    return storage.read_json(meta_file).get("model_name") if storage.isfile(meta_file) else None


def check_same_prediction_target(info: dict, model_name: str) -> None:
    """Refuses weights trained with another `upsample_residual_std` than the configured adapter's (the
    parameters fit either way, the predictions would not)."""
    trained = trained_model_name(info)
    mark = adapter_lib.UPSAMPLE_RESIDUAL_MARK

    def residual_std(name: str) -> str:
        return name[name.index(mark) + len(mark):] if mark in name else "None"

    if trained is not None and residual_std(trained) != residual_std(model_name):
        raise ValueError(
            f"checkpoint {info['source']} was trained as {trained!r} but the sampling config builds {model_name!r}: "
            f"set unet_adapter.upsample_residual_std = {residual_std(trained)} for this model (e.g. "
            f"ssr/unet_adapter.upsample_residual_std in the sampling gin files), as in its training run")


def load_params(path: str, abstract: Params | None = None, use_ema: bool = True,
                model_name: str | None = None) -> tuple[Params, dict]:
    """Reads a parameter tree from a training or inference checkpoint; returns `(params, info)`.

    `abstract`: the model's tree of ShapeDtypeStructs with shardings (`abstract_params`); every path must be
    in the checkpoint with the same shape, and arrays land on those shardings. None reads every stored
    parameter as host NumPy arrays (e.g. a style T2I checkpoint). `info` is `describe(path)`. `model_name`:
    the configured adapter's name, to refuse weights trained as another prediction target
    (`check_same_prediction_target`).
    """
    info = describe(path, use_ema)
    if model_name is not None:
        check_same_prediction_target(info, model_name)
    if info["kind"] == "inference":
        keys, leaves = _inference_sources(info["source"])
        root = info["source"]
    else:
        keys, leaves, _ = _training_sources(info["source"], use_ema)
        root = info["source"]
    if abstract is None:
        targets = {name: jax.ShapeDtypeStruct(tuple(leaf.shape), leaf.dtype) for name, leaf in leaves.items()}
    else:
        targets = param_paths.flatten(abstract)
        found = {name: list(leaf.shape) for name, leaf in leaves.items()}
        problems = checkpoint_layout.signature_mismatch({name: list(t.shape) for name, t in targets.items()}, found)
        problems = [problem for problem in problems if not problem.startswith("unexpected")]
        if problems:
            raise ValueError(f"checkpoint {root} does not fit the configured model ({len(problems)} problems, e.g. "
                             f"{problems[:3]}); check that the sampling gin config builds the model it was trained as")
    item, restore_args = {}, {}
    for name, target in targets.items():
        key_path = keys[name]
        if abstract is None:
            args = ocp.RestoreArgs(restore_type=np.ndarray)
        else:
            args = ocp.ArrayRestoreArgs(sharding=target.sharding, dtype=target.dtype)
        param_paths.set_path(item, key_path[1:], target)
        param_paths.set_path(restore_args, key_path[1:], args)
    item_dir = storage.join(root, keys[next(iter(targets))][0])
    restored = ocp.PyTreeCheckpointer().restore(item_dir, args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True))
    flat = {name: param_paths.get_path(restored, keys[name][1:]) for name in targets}
    return param_paths.unflatten(flat), info
