"""Orbax checkpoints of the train state plus JSON metadata (data-iterator position, model signature).

Layout: `MODEL_DIR/checkpoints/<step>/{state, meta, data}` (`data`: the input pipeline's snapshot, one
subdirectory per host), local or `gs://` (Orbax/TensorStore and the storage layer). Saves are asynchronous; Orbax's
preservation policies keep the last `keep_last` plus every step that is a multiple of `keep_every`.
Restoring walks back from the newest step: a checkpoint that fails to read on any host (truncated, a shard
missing, never committed) is set aside to `MODEL_DIR/set_aside/` with a warning, on all hosts alike. A
checkpoint written by a different model is an error, never skipped. Parameters can also be initialised from
another run's checkpoint through a T5X-style assignment map (e.g. a T2I checkpoint into the
spatial layers of a STUNet).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import gin
import jax
import numpy as np
import orbax.checkpoint as ocp

from lumiere_jax import faults, storage
from lumiere_jax.models import inflate, param_paths
from lumiere_jax.parallel import multihost
from lumiere_jax.stages import checkpoint_layout
from lumiere_jax.train import data_snapshot_item
from lumiere_jax.train import state as state_lib

DATA_SNAPSHOTS_SUBDIR = "data_snapshots"  # the input snapshots' place before they became the steps' `data` item
SET_ASIDE_SUBDIR = "set_aside"  # unusable steps, moved out of checkpoints/ for inspection


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
      init_pad_input_channels: a source input conv with fewer input channels than the target is widened by
        the model's weight surgery (`models.inflate.inflate_leaf`; paper 4.2: 3 -> 7 channels, the new ones
        start at zero).
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


class Checkpointer:
    """Saves and restores `TrainState` + metadata (+ the input snapshot) under `MODEL_DIR/checkpoints`.

    On several hosts every decision that changes what is on disk or which step is used (the restore step,
    setting a bad step aside) is agreed by all hosts; only process 0 moves files.
    """

    def __init__(self, model_dir: str, config: CheckpointConfig, model_name: str, signature: dict[str, list[int]]):
        self.config = config
        self.model_name = model_name
        self.signature = signature
        model_dir = storage.normalize(model_dir)
        self.directory = storage.join(model_dir, checkpoint_layout.CHECKPOINTS_SUBDIR)
        self.legacy_data_directory = storage.join(model_dir, DATA_SNAPSHOTS_SUBDIR)
        self.set_aside_directory = storage.join(model_dir, SET_ASIDE_SUBDIR)
        policies = [ocp.checkpoint_managers.LatestN(n=config.keep_last)]
        if config.keep_every:
            policies.append(ocp.checkpoint_managers.EveryNSteps(interval_steps=config.keep_every))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=config.async_save, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "meta", data_snapshot_item.DATA_ITEM))
        self._set_aside_uncommitted_steps()

    def should_save(self, step: int) -> bool:
        return step % self.config.save_every_steps == 0

    def save(self, step: int, state: state_lib.TrainState, data_state: Any, params_finite: bool,
             save_data_snapshot: Callable[[str], Any] | None = None) -> None:
        """Starts an (async) save of `state` at `step`; refuses to write non-finite parameters.

        `params_finite`: whether the state's trainable and EMA parameters are all finite (the train step
        reports it as the `params_finite` metric). `save_data_snapshot(directory)` writes this host's input
        snapshot into the step's `data` item (with `config.data_snapshots`) during this call; a failure only
        warns: resuming from this step then skips batches instead.
        """
        if not params_finite:
            raise RuntimeError(f"refusing to save step {step}: the parameters contain NaN or Inf")
        meta = {"step": int(step), "model_name": self.model_name, "signature": self.signature,
                "data_state": data_state, "nonfinite_total": int(state.nonfinite_total)}
        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if save_data_snapshot is not None and self.config.data_snapshots:
            items[data_snapshot_item.DATA_ITEM] = data_snapshot_item.DataSnapshotSave(
                functools.partial(_save_snapshot_or_warn, save_data_snapshot, step))
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        faults.maybe_kill("async_save", step, jax.process_index())

    def data_snapshot_location(self, step: int) -> tuple[str | None, bool]:
        """Where the input snapshot of a restored `step` lives: `(directory or None, require_commit)`.

        The step's own `data` item; for run directories written before it existed, the old
        `MODEL_DIR/data_snapshots/<step>` (committed by a local rename, so without markers); else None.
        """
        try:
            location = self.manager.restore(step, args=ocp.args.Composite(
                **{data_snapshot_item.DATA_ITEM: data_snapshot_item.DataSnapshotRestore()}))
            return location[data_snapshot_item.DATA_ITEM], True
        except Exception:  # noqa: BLE001 -- a step saved without a snapshot
            legacy = storage.join(self.legacy_data_directory, str(step))
            return (legacy, False) if storage.isdir(legacy) else (None, True)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(self, abstract_state: state_lib.TrainState) -> tuple[state_lib.TrainState, dict] | None:
        """The newest readable checkpoint onto `abstract_state`'s shardings (any mesh), or None if there is none.

        `abstract_state`: a TrainState of ShapeDtypeStructs carrying the target shardings.
        Returns `(state, meta)`; `meta["data_state"]` is the data iterator's saved position. A step that any
        host cannot read is set aside (`MODEL_DIR/set_aside/`, logged) by all hosts together, and the previous
        one is tried: every host resumes from the same step, and the bad step's number is free for the next save.
        """
        newer_than = None
        while (step := int(multihost.from_first_host(np.int64(self._newest_step_below(newer_than))))) >= 0:
            newer_than = step
            meta, problem = None, None
            try:
                meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
            except Exception as error:  # noqa: BLE001 -- any read failure means this checkpoint is unusable
                problem = f"unreadable metadata ({type(error).__name__}: {str(error)[:200]})"
            if meta is not None:
                self._check_same_model(step, meta)
                try:
                    restored = self.manager.restore(step, args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state)))
                except Exception as error:  # noqa: BLE001
                    problem = f"incomplete or corrupted state ({type(error).__name__}: {str(error)[:200]})"
            if not multihost.all_hosts_agree(problem is None):
                self._set_aside(step, problem or "another host could not read it")
                continue
            logging.info("restored checkpoint at step %d from %s", step, self.directory)
            return restored.state, meta
        return None

    def _newest_step_below(self, bound: int | None) -> int:
        steps = [step for step in self.steps() if bound is None or step < bound]
        return max(steps, default=-1)

    def _set_aside(self, step: int, reason: str) -> None:
        """Moves a bad step out of `checkpoints/` (kept for inspection, never deleted) on every host's behalf."""
        destination = storage.join(self.set_aside_directory, f"{step}-{int(time.time())}")
        logging.warning("checkpoint at step %d is unusable (%s); setting it aside to %s and trying the previous "
                        "one", step, reason, destination)
        if jax.process_index() == 0:
            storage.move_directory(storage.join(self.directory, str(step)), destination)
            storage.write_text_atomic(storage.join(destination, "REASON.txt"), reason + "\n")
        multihost.barrier(f"lumiere_set_aside_{step}")
        storage.invalidate_listing_cache()  # process 0 moved files: the other hosts' cached listings are stale
        self.manager.reload()

    def _set_aside_uncommitted_steps(self) -> None:
        """Step directories without Orbax's commit (a save interrupted on an object store) are set aside:
        Orbax does not list them, and a later save of the same step would collide with them."""
        committed = set(self.manager.all_steps())
        uncommitted = [int(name) for name in storage.listdir(self.directory)
                       if name.isdigit() and int(name) not in committed]
        for step in multihost.ints_from_first_host(sorted(uncommitted)):
            self._set_aside(step, "never committed (no commit marker)")

    def _check_same_model(self, step: int, meta: dict) -> None:
        problems = checkpoint_layout.signature_mismatch(self.signature, meta.get("signature", {}))
        if meta.get("model_name") != self.model_name or problems:
            raise ValueError(
                f"checkpoint at step {step} in {self.directory} was written by a different model "
                f"({meta.get('model_name')!r}, this run is {self.model_name!r}; {len(problems)} parameter "
                f"differences, e.g. {problems[:3]}). Use a new MODEL_DIR, or load it into this model with "
                "CheckpointConfig.init_from and an assignment_map")


def _save_snapshot_or_warn(save_data_snapshot: Callable[[str], Any], step: int, directory: str) -> None:
    try:
        save_data_snapshot(directory)
    except Exception as error:  # noqa: BLE001 -- the checkpoint stays usable without it
        logging.warning("could not save the input snapshot of step %d (%s: %s); resuming from this checkpoint "
                        "will skip batches instead", step, type(error).__name__, str(error)[:300])


def _source_paths(step_dir: str, use_ema: bool) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[int, ...]]]:
    """`{model param path: key path inside the saved state}` and `{model param path: shape}` of a checkpoint."""
    tree = ocp.PyTreeCheckpointer().metadata(storage.join(step_dir, "state")).item_metadata.tree
    paths = {}
    for group in ("frozen_params", "trainable_params"):
        for path in param_paths.flatten(tree.get(group) or {}):
            paths[path] = (group, *path.split("/"))
    if use_ema:
        for path in param_paths.flatten(tree.get("ema_params") or {}):
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
    low_res_channels: int = 0,
) -> dict[str, jax.Array]:
    """Loads parameters for initialisation from `config.init_from` through the assignment map.

    `abstract_params`: `{target path: ShapeDtypeStruct with sharding}`. Returns `{target path: array}` for the
    paths that load; the others keep their fresh initialisation. Frozen targets must all load. Each loaded
    parameter goes through the model's weight surgery (`models.inflate.inflate_leaf`; `low_res_channels`: the
    SR input channels after x in the input conv).
    """
    step_dir = checkpoint_layout.resolve_step_directory(config.init_from)
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
                config.init_pad_input_channels and inflate.widens_input(target_path, shape, tuple(target.shape))):
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
        key = source_keys[source_path]
        param_paths.set_path(item, key, jax.ShapeDtypeStruct(shape, target.dtype, sharding=sharding))
        param_paths.set_path(restore_args, key, ocp.ArrayRestoreArgs(sharding=sharding, dtype=target.dtype))
    restored = ocp.PyTreeCheckpointer().restore(storage.join(step_dir, "state"), args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True))
    loaded = {}
    for target_path, source_path in plan.items():
        value = param_paths.get_path(restored, source_keys[source_path])
        target = abstract_params[target_path]
        if value.shape != tuple(target.shape):
            value = jax.jit(functools.partial(inflate.inflate_leaf, target_path, target_shape=tuple(target.shape),
                                              low_res_channels=low_res_channels), out_shardings=target.sharding)(value)
        loaded[target_path] = value
    logging.info("initialised %d of %d parameters from %s", len(loaded), len(abstract_params), step_dir)
    return loaded
