"""Orbax checkpoints of the train state plus JSON metadata (data-iterator position, model signature).

Layout: `MODEL_DIR/checkpoints/<step>/{state, meta}`, and the input pipeline's snapshot of the same step (one
subdirectory per host) in `MODEL_DIR/data_snapshots/<step>/`, kept and deleted in step with the checkpoints.
Saves are asynchronous; the last `keep_last` are kept plus every step that is a multiple of `keep_every`.
Restoring walks back from the newest step: a checkpoint that fails to read (truncated, corrupted) is skipped
with a warning. A checkpoint written by a different model is an error, never skipped. Parameters can also be
initialised from another run's checkpoint through a T5X-style assignment map (e.g. a T2I checkpoint into the
spatial layers of a STUNet).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import gin
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from lumiere_jax.train import state as state_lib

CHECKPOINTS_SUBDIR = "checkpoints"
DATA_SNAPSHOTS_SUBDIR = "data_snapshots"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """When to save, what to keep, and where to initialise from.

    Attributes:
      save_every_steps: save period (the final step and a preemption always save).
      keep_last: number of most recent checkpoints kept.
      keep_every: additionally keep every checkpoint whose step is a multiple of this (None: none).
      async_save: write in a background thread while training continues.
      init_from: used only when MODEL_DIR has no checkpoint: a run directory (its latest checkpoint), a
        `.../checkpoints` directory, or one step directory. None: initialise from scratch.
      assignment_map: `((target_regex, source_or_None), ...)`; the first regex that fully matches a target
        parameter path decides: None keeps the fresh initialisation, otherwise the source path is the regex
        substitution (groups allowed). Unmatched paths load from the same path. Frozen parameters must load.
      init_use_ema: load the source's EMA weights for its trainable parameters when it has them.
      init_pad_input_channels: a source kernel with fewer input channels (axis -2) than the target is
        zero-padded (paper 4.2: 3 -> 7 channels, new channels start at zero).
      data_snapshots: save the input pipeline's iterator with each checkpoint, so resuming reads no skipped
        batches (iterators without snapshots, and unusable snapshots, resume by skipping).
    """

    save_every_steps: int = 1000
    keep_last: int = 3
    keep_every: int | None = None
    async_save: bool = True
    init_from: str | None = None
    assignment_map: Sequence[tuple[str, str | None]] = ()
    init_use_ema: bool = True
    init_pad_input_channels: bool = False
    data_snapshots: bool = True

    def __post_init__(self):
        if self.save_every_steps < 1 or self.keep_last < 1:
            raise ValueError(f"save_every_steps={self.save_every_steps} and keep_last={self.keep_last} must be >= 1")


def model_signature(params: Any) -> dict[str, list[int]]:
    """`{param path: shape}` of a (possibly abstract) parameter tree: what must match to resume."""
    return {path: list(leaf.shape) for path, leaf in sorted(state_lib.flatten(params).items())}


def signature_mismatch(expected: dict[str, list[int]], found: dict[str, list[int]]) -> list[str]:
    """Human-readable differences between two signatures (empty when they match)."""
    problems = [f"missing {path}" for path in sorted(set(expected) - set(found))]
    problems += [f"unexpected {path}" for path in sorted(set(found) - set(expected))]
    problems += [f"{path}: shape {found[path]} != {expected[path]}"
                 for path in sorted(set(expected) & set(found)) if found[path] != expected[path]]
    return problems


class Checkpointer:
    """Saves and restores `TrainState` + metadata under `MODEL_DIR/checkpoints`."""

    def __init__(self, model_dir: str, config: CheckpointConfig, model_name: str, signature: dict[str, list[int]]):
        self.config = config
        self.model_name = model_name
        self.signature = signature
        self.directory = os.path.join(os.path.abspath(model_dir), CHECKPOINTS_SUBDIR)
        self.data_directory = os.path.join(os.path.abspath(model_dir), DATA_SNAPSHOTS_SUBDIR)
        self._saved_data_snapshots = False  # only a writer prunes (a reader may run beside a training job)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=config.keep_last, keep_period=config.keep_every,
            enable_async_checkpointing=config.async_save, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def should_save(self, step: int) -> bool:
        return step % self.config.save_every_steps == 0

    def save(self, step: int, state: state_lib.TrainState, data_state: Any, params_finite: bool,
             save_data_snapshot: Callable[[str], Any] | None = None) -> None:
        """Starts an (async) save of `state` at `step`; refuses to write non-finite parameters.

        `params_finite`: whether the state's trainable and EMA parameters are all finite (the train step
        reports it as the `params_finite` metric). `save_data_snapshot(directory)` writes this host's input
        snapshot for `step` (with `config.data_snapshots`); a failure only warns: resuming would skip instead.
        """
        if not params_finite:
            raise RuntimeError(f"refusing to save step {step}: the parameters contain NaN or Inf")
        if save_data_snapshot is not None and self.config.data_snapshots:
            # Written first, so a checkpoint that commits finds its snapshot complete.
            try:
                save_data_snapshot(self.data_snapshot_dir(step))
            except Exception as error:  # noqa: BLE001 -- the checkpoint stays usable without it
                logging.warning("could not save the input snapshot of step %d (%s: %s); resuming from this "
                                "checkpoint will skip batches instead", step, type(error).__name__, str(error)[:300])
            self._saved_data_snapshots = True
        meta = {"step": int(step), "model_name": self.model_name, "signature": self.signature,
                "data_state": data_state, "nonfinite_total": int(state.nonfinite_total)}
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        if self._saved_data_snapshots:
            self._prune_data_snapshots(newest=step)

    def data_snapshot_dir(self, step: int) -> str:
        return os.path.join(self.data_directory, str(step))

    def _prune_data_snapshots(self, newest: int | None = None) -> None:
        """Deletes the snapshots of steps whose checkpoint Orbax no longer keeps (or never committed).

        Steps from `newest` on are kept: their checkpoint may still be saving. Process 0 deletes for all hosts.
        """
        if jax.process_index() != 0 or not os.path.isdir(self.data_directory):
            return
        kept = set(self.manager.all_steps())
        for name in os.listdir(self.data_directory):
            if name.isdigit() and int(name) not in kept and (newest is None or int(name) < newest):
                shutil.rmtree(os.path.join(self.data_directory, name), ignore_errors=True)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        if self._saved_data_snapshots:
            self._prune_data_snapshots()
        self.manager.close()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(self, abstract_state: state_lib.TrainState) -> tuple[state_lib.TrainState, dict] | None:
        """The newest readable checkpoint onto `abstract_state`'s shardings (any mesh), or None if there is none.

        `abstract_state`: a TrainState of ShapeDtypeStructs carrying the target shardings.
        Returns `(state, meta)`; `meta["data_state"]` is the data iterator's saved position.
        """
        for step in reversed(self.steps()):
            try:
                meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
            except Exception as error:  # noqa: BLE001 -- any read failure means this checkpoint is unusable
                logging.warning("checkpoint at step %d has unreadable metadata (%s); trying the previous one",
                                step, error)
                continue
            self._check_same_model(step, meta)
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state)))
            except Exception as error:  # noqa: BLE001
                logging.warning("checkpoint at step %d is incomplete or corrupted (%s: %s); "
                                "falling back to the previous one", step, type(error).__name__, str(error)[:200])
                continue
            logging.info("restored checkpoint at step %d from %s", step, self.directory)
            return restored.state, meta
        return None

    def _check_same_model(self, step: int, meta: dict) -> None:
        problems = signature_mismatch(self.signature, meta.get("signature", {}))
        if meta.get("model_name") != self.model_name or problems:
            raise ValueError(
                f"checkpoint at step {step} in {self.directory} was written by a different model "
                f"({meta.get('model_name')!r}, this run is {self.model_name!r}; {len(problems)} parameter "
                f"differences, e.g. {problems[:3]}). Use a new MODEL_DIR, or load it into this model with "
                "CheckpointConfig.init_from and an assignment_map")


def resolve_step_directory(path: str) -> str:
    """A step directory (holding `state/`) from a run directory, a checkpoints directory or a step directory."""
    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, "state")):
        return path
    if os.path.isdir(os.path.join(path, CHECKPOINTS_SUBDIR)):
        path = os.path.join(path, CHECKPOINTS_SUBDIR)
    steps = sorted((int(name) for name in (os.listdir(path) if os.path.isdir(path) else []) if name.isdigit()),
                   reverse=True)
    for step in steps:
        candidate = os.path.join(path, str(step))
        if os.path.exists(os.path.join(candidate, "state", "commit_success.txt")) or os.path.exists(
                os.path.join(candidate, "state", "_METADATA")):
            return candidate
    raise FileNotFoundError(f"no checkpoint found at {path!r} to initialise from; give a run directory, its "
                            "checkpoints/ directory or one step directory (CheckpointConfig.init_from)")


def _source_paths(step_dir: str, use_ema: bool) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[int, ...]]]:
    """`{model param path: key path inside the saved state}` and `{model param path: shape}` of a checkpoint."""
    tree = ocp.PyTreeCheckpointer().metadata(os.path.join(step_dir, "state")).item_metadata.tree
    paths = {}
    for group in ("frozen_params", "trainable_params"):
        for path in state_lib.flatten(tree.get(group) or {}):
            paths[path] = (group, *path.split("/"))
    if use_ema:
        for path in state_lib.flatten(tree.get("ema_params") or {}):
            paths[path] = ("ema_params", *path.split("/"))
    return paths, {path: tuple(leaf.shape) for path, leaf in _leaves_by_path(tree, paths).items()}


def _leaves_by_path(tree: dict, paths: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    leaves = {}
    for path, key_path in paths.items():
        node = tree
        for key in key_path:
            node = node[key]
        leaves[path] = node
    return leaves


def map_source_path(target_path: str, assignment_map: Sequence[tuple[str, str | None]]) -> str | None:
    """Source path for a target parameter under the assignment map (None: keep the fresh initialisation)."""
    for target_regex, source in assignment_map:
        match = re.fullmatch(target_regex, target_path)
        if match:
            return None if source is None else match.expand(source)
    return target_path


def load_init_params(
    config: CheckpointConfig,
    abstract_params: dict[str, jax.ShapeDtypeStruct],
    frozen_paths: set[str],
) -> dict[str, jax.Array]:
    """Loads parameters for initialisation from `config.init_from` through the assignment map.

    `abstract_params`: `{target path: ShapeDtypeStruct with sharding}`. Returns `{target path: array}` for the
    paths that load; the others keep their fresh initialisation. Frozen targets must all load.
    """
    step_dir = resolve_step_directory(config.init_from)
    source_keys, source_shapes = _source_paths(step_dir, config.init_use_ema)
    plan, problems = {}, []
    for target_path, target in sorted(abstract_params.items()):
        source_path = map_source_path(target_path, config.assignment_map)
        if source_path is None or source_path not in source_keys:
            if target_path in frozen_paths:
                problems.append(f"frozen {target_path} has no source ({source_path!r} not in the checkpoint)")
            continue
        shape = source_shapes[source_path]
        if shape != tuple(target.shape) and not (
                config.init_pad_input_channels and _pads_input_channels(shape, tuple(target.shape))):
            problems.append(f"{target_path}: checkpoint shape {shape} != model shape {tuple(target.shape)}")
            continue
        plan[target_path] = source_path
    if problems:
        raise ValueError(
            f"checkpoint {step_dir} does not fit this model through the assignment map ({len(problems)} problems, "
            f"e.g. {problems[:3]}); fix CheckpointConfig.assignment_map or init_from")
    item, restore_args = {}, {}
    for target_path, source_path in plan.items():
        target = abstract_params[target_path]
        shape = source_shapes[source_path]
        sharding = target.sharding if shape == tuple(target.shape) else jax.sharding.NamedSharding(
            target.sharding.mesh, jax.sharding.PartitionSpec())
        state_lib.set_path(item, source_keys[source_path], jax.ShapeDtypeStruct(shape, target.dtype, sharding=sharding))
        state_lib.set_path(restore_args, source_keys[source_path], ocp.ArrayRestoreArgs(sharding=sharding, dtype=target.dtype))
    restored = ocp.PyTreeCheckpointer().restore(os.path.join(step_dir, "state"), args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True))
    loaded = {}
    for target_path, source_path in plan.items():
        value = state_lib.get_path(restored, source_keys[source_path])
        target = abstract_params[target_path]
        if value.shape != tuple(target.shape):
            value = _zero_pad_input_channels(value, target)
        loaded[target_path] = value
    logging.info("initialised %d of %d parameters from %s", len(loaded), len(abstract_params), step_dir)
    return loaded


def _pads_input_channels(source_shape: tuple[int, ...], target_shape: tuple[int, ...]) -> bool:
    return (len(source_shape) == len(target_shape) >= 2 and source_shape[:-2] == target_shape[:-2]
            and source_shape[-1] == target_shape[-1] and source_shape[-2] < target_shape[-2])


def _zero_pad_input_channels(value: jax.Array, target: jax.ShapeDtypeStruct) -> jax.Array:
    pad = [(0, 0)] * (value.ndim - 2) + [(0, target.shape[-2] - value.shape[-2]), (0, 0)]
    return jax.jit(lambda v: jnp.pad(v, pad), out_shardings=target.sharding)(value)
