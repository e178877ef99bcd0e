"""The training loop, read top to bottom: mesh -> state (restore / init-from / scratch) -> compiled step -> loop.

`train` is the gin entry point that the run files in gin_configs/runs/ configure; its settings come grouped in
config dataclasses (optimizer, diffusion, checkpoint, mesh, monitor), as flax's `train_and_evaluate(config)`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Any, Protocol

import gin
import jax
import numpy as np

from lumiere_jax import faults, storage
from lumiere_jax.models import param_paths
from lumiere_jax.parallel import global_arrays
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.parallel import partitioning
from lumiere_jax.stages import adapter as adapter_lib
from lumiere_jax.stages import checkpoint_layout
from lumiere_jax.stages import text as text_lib
from lumiere_jax.stages.diffusion_config import DiffusionConfig
from lumiere_jax.train import checkpoints as checkpoints_lib
from lumiere_jax.train import estimate as estimate_lib
from lumiere_jax.train import metrics as metrics_lib
from lumiere_jax.train import monitor as monitor_lib
from lumiere_jax.train import optimizer as optimizer_lib
from lumiere_jax.train import preemption
from lumiere_jax.train import state as state_lib
from lumiere_jax.train import step as step_lib


class BatchIterator(Protocol):
    """A deterministic, resumable iterator of per-process batches (numpy; docs/ARCHITECTURE.md 'Batches').

    It may also have snapshots, as `data.pipeline.DataIterator` does: `save_snapshot(directory, pending)` and
    `set_state(state, snapshot_dir)`; the loop then saves one with every checkpoint (`CheckpointConfig.data_snapshots`).
    """

    def __next__(self) -> dict[str, np.ndarray]: ...

    def get_state(self) -> Any: ...  # JSON-serialisable position, saved with every checkpoint

    def set_state(self, state: Any) -> None: ...


# (split, batch_size per process, seed, shard_index, num_shards) -> BatchIterator
DatasetFn = Callable[..., BatchIterator]


class NonFiniteLossError(RuntimeError):
    """Training produced non-finite losses or gradients for too many steps in a row."""


@dataclasses.dataclass
class TrainResult:
    state: state_lib.TrainState
    history: list[dict[str, float]]  # one summary per progress report: {"step", "loss", ...}
    preempted: bool


def _sharded_abstract(abstract: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                        abstract, shardings)


@gin.configurable
def train(
    model_dir: str = gin.REQUIRED,
    adapter: adapter_lib.ModelAdapter = gin.REQUIRED,
    dataset_fn: DatasetFn = gin.REQUIRED,
    num_train_steps: int = gin.REQUIRED,
    global_batch_size: int = gin.REQUIRED,
    seed: int = 0,
    text_encoder_params_fn: Callable[[jax.Array], Any] | None = None,
    optimizer: optimizer_lib.OptimizerConfig = optimizer_lib.OptimizerConfig(),
    diffusion: DiffusionConfig = DiffusionConfig(),
    checkpoint: checkpoints_lib.CheckpointConfig = checkpoints_lib.CheckpointConfig(),
    mesh: mesh_lib.MeshConfig = mesh_lib.MeshConfig(),
    monitor: monitor_lib.MonitorConfig = monitor_lib.MonitorConfig(),
) -> TrainResult:
    """Trains `adapter`'s model on `dataset_fn`'s "train" split into `model_dir`; resumes if it holds checkpoints.

    `monitor` sets the progress reports, and the evaluation and sample videos on the "validation" split.
    `text_encoder_params_fn(rng)` loads the frozen text encoder (default: `adapter.text_encoder.init`).
    """
    if not model_dir:
        raise ValueError("model_dir is empty; set the MODEL_DIR macro, e.g. --gin.MODEL_DIR=/path/to/run")
    device_mesh = _make_mesh(mesh, global_batch_size)
    rules = mesh.rules
    # The second key is the text encoder's (stages/text.py rebuilds it for sampling, export and the text cache).
    init_rng, _, step_rng, eval_rng, sample_rng = jax.random.split(jax.random.key(seed), 5)
    learning_rate = optimizer_lib.learning_rate_schedule(optimizer, num_train_steps)
    tx = optimizer_lib.make_optimizer(optimizer, learning_rate)
    use_ema = optimizer.ema_decay > 0

    # Parameters and state are built outside the mesh context: placement comes from explicit out_shardings,
    # and flax's init-time constraints (e.g. DenseGeneral's reshaped kernels) need no mesh.
    state, data_state, checkpointer, state_shardings = _build_state(
        adapter, checkpoint, device_mesh, rules, tx, use_ema, init_rng, model_dir)
    start_step = int(state.step)
    if start_step >= num_train_steps:
        logging.info("MODEL_DIR already holds step %d >= num_train_steps=%d; nothing to do", start_step,
                     num_train_steps)
        checkpointer.close()
        return TrainResult(state=state, history=[], preempted=False)

    with mesh_lib.mesh_context(device_mesh, rules):
        local_batch_size = global_batch_size // jax.process_count()
        train_iterator, data_snapshots = _train_iterator(
            dataset_fn, local_batch_size, seed, device_mesh, checkpoint, checkpointer, data_state, start_step)
        first_batch = next(train_iterator)
        text_encoder_params, text_encoder_shardings = _load_text_encoder(
            adapter, text_encoder_params_fn, seed, device_mesh, rules, cached="text_embeddings" in first_batch)
        compiled_step = compile_train_step(
            step_lib.bind_train_step(adapter, diffusion, tx, learning_rate, optimizer.ema_decay if use_ema else 0.0),
            state, state_shardings, first_batch, text_encoder_params, text_encoder_shardings, step_rng, device_mesh)
        estimate = estimate_lib.train_step_estimate(compiled_step, adapter, global_batch_size, device_mesh,
                                                    monitor.chips)
        for line in estimate.lines():
            logging.info("compiled step: %s", line)
        throughput = metrics_lib.Throughput(start_step, num_train_steps, global_batch_size,
                                            metrics_lib.compiled_flops(compiled_step),
                                            estimate.model_flops_per_chip, estimate.peak_flops)

        writer = metrics_lib.create_writer(model_dir)
        _write_operative_config(model_dir, writer, start_step)
        reports = monitor_lib.Monitor(
            monitor, adapter, diffusion, _validation_batches(dataset_fn, local_batch_size, seed, device_mesh),
            throughput, writer, model_dir, eval_rng, sample_rng)
        watcher = preemption.PreemptionWatcher()
        history, window = [], []
        preempted = False
        step = start_step
        batch = first_batch
        try:
            while step < num_train_steps:
                if batch is None:
                    batch = next(train_iterator)
                state, step_metrics = compiled_step(state, batch, text_encoder_params, step_rng)
                batch = None
                step += 1
                faults.maybe_kill("step", step, jax.process_index())
                window.append(step_metrics)
                if reports.reports_at(step, num_train_steps):
                    scalars = reports.report(step, window, state)
                    history.append({"step": step, **scalars})
                    window = []
                    _stop_if_nonfinite(step, scalars, monitor.max_consecutive_nonfinite)
                preempted = watcher.should_stop(step)
                if checkpointer.should_save(step) or step == num_train_steps or preempted:
                    params_finite = bool(jax.device_get(step_metrics["params_finite"]))
                    checkpointer.save(step, state, train_iterator.get_state(), params_finite,
                                      train_iterator.save_snapshot if data_snapshots else None)
                reports.validate(step, state.ema_model_params if use_ema else state.params, text_encoder_params)
                if preempted:
                    logging.warning("preempted: saved step %d, exiting", step)
                    break
        finally:
            watcher.close()
            checkpointer.close()
            writer.flush()
            writer.close()
    return TrainResult(state=state, history=history, preempted=preempted)


def _make_mesh(config: mesh_lib.MeshConfig, global_batch_size: int) -> jax.sharding.Mesh:
    """The device mesh; the global batch must split evenly over its data axes and over the processes."""
    mesh = config.make_mesh()
    mesh_lib.check_batch_divisible(global_batch_size, mesh)
    if global_batch_size % jax.process_count():
        raise ValueError(f"global_batch_size={global_batch_size} must be divisible by the {jax.process_count()} "
                         "processes")
    logging.info("mesh %s over %d devices, %d processes", dict(mesh.shape), mesh.size, jax.process_count())
    return mesh


def _train_iterator(dataset_fn, local_batch_size, seed, mesh, checkpoint, checkpointer, data_state, start_step):
    """This process's "train" batches as global arrays, at the restored step's position if there is one.

    Returns `(iterator, data_snapshots)`: whether the iterator's snapshots are saved with the checkpoints.
    """
    iterator = global_arrays.GlobalBatchIterator(
        dataset_fn("train", local_batch_size, seed, jax.process_index(), jax.process_count()), mesh)
    data_snapshots = checkpoint.data_snapshots and iterator.supports_snapshots
    if data_state is not None:
        # The snapshot of the restored step, if usable; otherwise the iterator skips to it (exact, slower).
        snapshot_dir, require_commit = (checkpointer.data_snapshot_location(start_step) if data_snapshots
                                        else (None, True))
        iterator.set_state(data_state, snapshot_dir, require_commit)
    return iterator, data_snapshots


def _validation_batches(dataset_fn, local_batch_size, seed, mesh) -> Callable[[int], list[dict]]:
    """`count -> the first count global batches of the "validation" split` (read in order, the same each time)."""

    def first_batches(count: int) -> list[dict]:
        iterator = dataset_fn("validation", local_batch_size, seed, jax.process_index(), jax.process_count())
        return [global_arrays.make_global_batch(next(iterator), mesh) for _ in range(count)]

    return first_batches


def compile_train_step(train_step_fn, state, state_shardings, batch, text_encoder_params, text_encoder_shardings,
                       step_rng, mesh):
    """The train step compiled for the batch's shapes and shardings (arrays or sharded ShapeDtypeStructs, as
    the planner passes); the state's buffers are donated."""
    batch_shardings = jax.tree.map(lambda leaf: leaf.sharding, batch)
    replicated = partitioning.replicated(mesh)
    train_step = jax.jit(train_step_fn, in_shardings=(state_shardings, batch_shardings, text_encoder_shardings,
                                                      replicated),
                         out_shardings=(state_shardings, replicated), donate_argnums=(0,))
    return train_step.lower(state, batch, text_encoder_params, step_rng).compile()


def _stop_if_nonfinite(step: int, scalars: dict[str, float], max_consecutive_nonfinite: int) -> None:
    if scalars["nonfinite_streak"] >= max_consecutive_nonfinite:
        raise NonFiniteLossError(
            f"stopping at step {step}: {int(scalars['nonfinite_streak'])} consecutive steps had a non-finite loss "
            f"or gradient (limit max_consecutive_nonfinite={max_consecutive_nonfinite}); the last checkpoint holds "
            "finite parameters. Lower the learning rate, check the data, or resume with a different seed")


def _load_text_encoder(adapter, text_encoder_params_fn, seed, mesh, rules, cached: bool):
    """The frozen T5 on the mesh and its shardings; nothing when batches carry cached text embeddings."""
    if cached:
        logging.info("batches carry cached text embeddings: the text encoder is not loaded")
        return {}, {}
    return text_lib.load_text_encoder_params(adapter.text_encoder, text_encoder_params_fn, seed, mesh, rules)


def _count(params: Any) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


@dataclasses.dataclass(frozen=True)
class AbstractState:
    """Shapes, shardings and trainable mask of a run's state, allocating nothing (the trainer and the planner)."""

    state: Any  # TrainState of ShapeDtypeStructs carrying their shardings
    state_shardings: Any
    params: Any  # unsharded abstract parameters
    param_shardings: Any
    mask: Any | None  # tree of bools, True = trained; None trains everything


def abstract_train_state(adapter, mesh, rules, tx, use_ema: bool, init_rng) -> AbstractState:
    """Shapes, logical axes and shardings of parameters and the whole state, without allocating anything."""
    init_params = adapter.init
    boxed_params = jax.eval_shape(init_params, init_rng)
    abstract_params = jax.eval_shape(lambda rng: partitioning.unbox(init_params(rng)), init_rng)
    mask = adapter.trainable_mask(abstract_params) if adapter.trainable_mask is not None else None
    param_shardings = partitioning.shardings_from_logical(
        partitioning.logical_specs(boxed_params), mesh, rules, abstract_params)
    boxed_trainable, boxed_frozen = state_lib.split_params(boxed_params, mask)
    create_state = functools.partial(state_lib.create_train_state, optimizer=tx, use_ema=use_ema)
    state_specs = partitioning.logical_specs(jax.eval_shape(create_state, boxed_trainable, boxed_frozen))
    abstract_trainable, abstract_frozen = state_lib.split_params(abstract_params, mask)
    unsharded_state = jax.eval_shape(create_state, abstract_trainable, abstract_frozen)
    state_shardings = partitioning.shardings_from_logical(state_specs, mesh, rules, unsharded_state)
    return AbstractState(_sharded_abstract(unsharded_state, state_shardings), state_shardings, abstract_params,
                         param_shardings, mask)


def _build_state(adapter, checkpoint, mesh, rules, tx, use_ema, init_rng, model_dir):
    """Restores the latest checkpoint in MODEL_DIR, else initialises (through `init_from` if set).

    Returns `(state, data_state or None, checkpointer, state_shardings)`.
    """
    abstract = abstract_train_state(adapter, mesh, rules, tx, use_ema, init_rng)
    abstract_params, mask, param_shardings = abstract.params, abstract.mask, abstract.param_shardings
    state_shardings, abstract_state = abstract.state_shardings, abstract.state
    abstract_trainable, abstract_frozen = state_lib.split_params(abstract_params, mask)
    logging.info("%d trainable and %d frozen parameters", _count(abstract_trainable), _count(abstract_frozen))

    checkpointer = checkpoints_lib.Checkpointer(
        model_dir, checkpoint, adapter.name, checkpoint_layout.model_signature(abstract_params))
    restored = checkpointer.restore_latest(abstract_state)
    if restored is not None:
        state, meta = restored
        return state, meta["data_state"], checkpointer, state_shardings
    state = _initial_state(adapter, checkpoint, init_rng, tx, use_ema, mask, param_shardings,
                           state_shardings, _sharded_abstract(abstract_params, param_shardings))
    return state, None, checkpointer, state_shardings


def _initial_state(adapter, checkpoint, init_rng, tx, use_ema, mask, param_shardings, state_shardings,
                   abstract_params) -> state_lib.TrainState:
    """A fresh state: random initialisation, then parameters loaded through the assignment map if configured
    (and the model's weight surgery, `models.inflate.inflate_leaf`)."""
    params = jax.jit(lambda rng: partitioning.unbox(adapter.init(rng)), out_shardings=param_shardings)(init_rng)
    if checkpoint.init_from:
        _, frozen_abstract = state_lib.split_params(abstract_params, mask)
        loaded = checkpoints_lib.load_init_params(
            checkpoint, param_paths.flatten(abstract_params), set(param_paths.flatten(frozen_abstract)),
            low_res_channels=adapter.low_res_channels)
        params = param_paths.unflatten({**param_paths.flatten(params), **loaded})
    trainable, frozen = state_lib.split_params(params, mask)
    create = jax.jit(lambda t, f: state_lib.create_train_state(t, f, tx, use_ema), out_shardings=state_shardings)
    return create(trainable, frozen)


def _write_operative_config(model_dir: str, writer, step: int) -> None:
    """Saves the gin bindings this run actually used (T5X's operative config) to MODEL_DIR and TensorBoard."""
    config = gin.operative_config_str()
    if jax.process_index() == 0:
        storage.write_text_atomic(storage.join(model_dir, "operative_config.gin"), config)
    writer.write_texts(step, {"config/operative": "\n".join("    " + line for line in config.splitlines())})
