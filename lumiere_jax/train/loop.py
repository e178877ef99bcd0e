"""The training loop, read top to bottom: mesh -> state (restore / init-from / scratch) -> compiled step -> loop.

`train` is the gin entry point that the run files in gin_configs/runs/ configure.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import gin
import jax
import numpy as np
from jax.experimental import multihost_utils

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
from lumiere_jax.train import metrics as metrics_lib
from lumiere_jax.train import optimizer as optimizer_lib
from lumiere_jax.train import preemption
from lumiere_jax.train import previews as samples_lib
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
    optimizer: optimizer_lib.OptimizerConfig = optimizer_lib.OptimizerConfig(),
    checkpoint: checkpoints_lib.CheckpointConfig = checkpoints_lib.CheckpointConfig(),
    diffusion: DiffusionConfig = DiffusionConfig(),
    mesh_shape: Sequence[int] = (-1, 1, 1),
    dcn_mesh_shape: Sequence[int] | None = None,
    num_devices: int | None = None,
    logical_axis_rules: Sequence[tuple[str, Any]] = mesh_lib.LOGICAL_AXIS_RULES,
    text_encoder_params_fn: Callable[[jax.Array], Any] | None = None,
    seed: int = 0,
    log_every_steps: int = 50,
    eval_every_steps: int = 0,
    eval_batches: int = 1,
    eval_time_buckets: int = 4,
    sample_every_steps: int = 0,
    sample_count: int = 4,
    sample_steps: int = 16,
    sample_guidance_weight: float = 3.0,
    sample_fps: float = 16.0,
    max_consecutive_nonfinite: int = 10,
) -> TrainResult:
    """Trains `adapter`'s model on `dataset_fn`'s "train" split into `model_dir`; resumes if it holds checkpoints.

    Evaluation (`eval_every_steps > 0`) and samples (`sample_every_steps > 0`, for the first `sample_count`
    examples of a batch) use the "validation" split.
    `text_encoder_params_fn(rng)` loads the frozen text encoder (default: `adapter.text_encoder.init`).
    `num_devices` restricts the mesh to the first devices (debugging; None uses all).
    """
    if not model_dir:
        raise ValueError("model_dir is empty; set the MODEL_DIR macro, e.g. --gin.MODEL_DIR=/path/to/run")
    devices = jax.devices() if num_devices is None else jax.devices()[:num_devices]
    mesh = mesh_lib.make_mesh(mesh_shape, dcn_mesh_shape, devices)
    mesh_lib.check_batch_divisible(global_batch_size, mesh)
    if global_batch_size % jax.process_count():
        raise ValueError(f"global_batch_size={global_batch_size} must be divisible by the {jax.process_count()} "
                         "processes")
    rules = tuple(logical_axis_rules)
    logging.info("mesh %s over %d devices, %d processes", dict(mesh.shape), mesh.size, jax.process_count())
    # The second key is the text encoder's (stages/text.py rebuilds it for sampling, export and the text cache).
    init_rng, _, step_rng, eval_rng, sample_rng = jax.random.split(jax.random.key(seed), 5)
    learning_rate = optimizer_lib.learning_rate_schedule(optimizer, num_train_steps)
    tx = optimizer_lib.make_optimizer(optimizer, learning_rate)
    use_ema = optimizer.ema_decay > 0

    # Parameters and state are built outside the mesh context: placement comes from explicit out_shardings,
    # and flax's init-time constraints (e.g. DenseGeneral's reshaped kernels) need no mesh.
    state, data_state, checkpointer, state_shardings = _build_state(
        adapter, checkpoint, mesh, rules, tx, use_ema, init_rng, model_dir)
    start_step = int(state.step)
    if start_step >= num_train_steps:
        logging.info("MODEL_DIR already holds step %d >= num_train_steps=%d; nothing to do", start_step,
                     num_train_steps)
        checkpointer.close()
        return TrainResult(state=state, history=[], preempted=False)

    with mesh_lib.mesh_context(mesh, rules):
        num_processes, process = jax.process_count(), jax.process_index()
        local_batch_size = global_batch_size // num_processes
        train_iterator = global_arrays.GlobalBatchIterator(
            dataset_fn("train", local_batch_size, seed, process, num_processes), mesh)
        data_snapshots = checkpoint.data_snapshots and train_iterator.supports_snapshots
        if data_state is not None:
            # The snapshot of the restored step, if usable; otherwise the iterator skips to it (exact, slower).
            snapshot_dir, require_commit = (checkpointer.data_snapshot_location(start_step) if data_snapshots
                                            else (None, True))
            train_iterator.set_state(data_state, snapshot_dir, require_commit)

        first_batch = next(train_iterator)
        batch_shardings = jax.tree.map(lambda leaf: leaf.sharding, first_batch)
        text_encoder_params, text_encoder_shardings = _load_text_encoder(
            adapter, text_encoder_params_fn, seed, mesh, rules, cached="text_embeddings" in first_batch)
        replicated = partitioning.replicated(mesh)
        train_step = jax.jit(
            step_lib.bind_train_step(adapter, diffusion, tx, learning_rate, optimizer.ema_decay if use_ema else 0.0),
            in_shardings=(state_shardings, batch_shardings, text_encoder_shardings, replicated),
            out_shardings=(state_shardings, replicated), donate_argnums=(0,))
        compiled_step = train_step.lower(state, first_batch, text_encoder_params, step_rng).compile()
        throughput = metrics_lib.Throughput(start_step, num_train_steps, global_batch_size,
                                            metrics_lib.compiled_flops(compiled_step))

        writer = metrics_lib.create_writer(model_dir)
        _write_operative_config(model_dir, writer, start_step)
        periodic = _PeriodicTasks(
            adapter, diffusion, dataset_fn, mesh, writer, model_dir, seed, local_batch_size, eval_rng, sample_rng,
            eval_batches, eval_time_buckets, sample_count, sample_steps, sample_guidance_weight, sample_fps)
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
                if step % log_every_steps == 0 or step == num_train_steps:
                    scalars = _report(step, window, throughput, writer, state)
                    history.append({"step": step, **scalars})
                    window = []
                    if scalars["nonfinite_streak"] >= max_consecutive_nonfinite:
                        raise NonFiniteLossError(
                            f"stopping at step {step}: {int(scalars['nonfinite_streak'])} consecutive steps had a "
                            f"non-finite loss or gradient (limit max_consecutive_nonfinite="
                            f"{max_consecutive_nonfinite}); the last checkpoint holds finite parameters. Lower the "
                            "learning rate, check the data, or resume with a different seed")
                preempted = watcher.should_stop(step)
                if checkpointer.should_save(step) or step == num_train_steps or preempted:
                    params_finite = bool(jax.device_get(step_metrics["params_finite"]))
                    checkpointer.save(step, state, train_iterator.get_state(), params_finite,
                                      train_iterator.save_snapshot if data_snapshots else None)
                if eval_every_steps and step % eval_every_steps == 0:
                    periodic.evaluate(step, state.ema_model_params if use_ema else state.params, text_encoder_params)
                if sample_every_steps and step % sample_every_steps == 0:
                    periodic.sample(step, state.ema_model_params if use_ema else state.params, text_encoder_params)
                if periodic.ran_at(step, eval_every_steps, sample_every_steps):
                    throughput.restart(step)  # rates measure training only
                if preempted:
                    logging.warning("preempted: saved step %d, exiting", step)
                    break
        finally:
            watcher.close()
            checkpointer.close()
            writer.flush()
            writer.close()
    return TrainResult(state=state, history=history, preempted=preempted)


def _load_text_encoder(adapter, text_encoder_params_fn, seed, mesh, rules, cached: bool):
    """The frozen T5 on the mesh and its shardings; nothing when batches carry cached text embeddings."""
    if cached:
        logging.info("batches carry cached text embeddings: the text encoder is not loaded")
        return {}, {}
    return text_lib.load_text_encoder_params(adapter.text_encoder, text_encoder_params_fn, seed, mesh, rules)


def _count(params: Any) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def _build_state(adapter, checkpoint, mesh, rules, tx, use_ema, init_rng, model_dir):
    """Restores the latest checkpoint in MODEL_DIR, else initialises (through `init_from` if set).

    Returns `(state, data_state or None, checkpointer, state_shardings)`.
    """
    # Shapes, logical axes and shardings of parameters and the whole state, without allocating anything.
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
    abstract_state = _sharded_abstract(unsharded_state, state_shardings)
    logging.info("%d trainable and %d frozen parameters", _count(abstract_trainable), _count(abstract_frozen))

    checkpointer = checkpoints_lib.Checkpointer(
        model_dir, checkpoint, adapter.name, checkpoint_layout.model_signature(abstract_params))
    restored = checkpointer.restore_latest(abstract_state)
    if restored is not None:
        state, meta = restored
        return state, meta["data_state"], checkpointer, state_shardings
    state = _initial_state(init_params, checkpoint, init_rng, tx, use_ema, mask, param_shardings,
                           state_shardings, _sharded_abstract(abstract_params, param_shardings))
    return state, None, checkpointer, state_shardings


def _initial_state(init_params, checkpoint, init_rng, tx, use_ema, mask, param_shardings, state_shardings,
                   abstract_params) -> state_lib.TrainState:
    """A fresh state: random initialisation, then parameters loaded through the assignment map if configured."""
    params = jax.jit(lambda rng: partitioning.unbox(init_params(rng)), out_shardings=param_shardings)(init_rng)
    if checkpoint.init_from:
        _, frozen_abstract = state_lib.split_params(abstract_params, mask)
        loaded = checkpoints_lib.load_init_params(
            checkpoint, param_paths.flatten(abstract_params), set(param_paths.flatten(frozen_abstract)))
        params = param_paths.unflatten({**param_paths.flatten(params), **loaded})
    trainable, frozen = state_lib.split_params(params, mask)
    create = jax.jit(lambda t, f: state_lib.create_train_state(t, f, tx, use_ema), out_shardings=state_shardings)
    return create(trainable, frozen)


def _report(step, window, throughput, writer, state) -> dict[str, float]:
    scalars = metrics_lib.summarize(window)
    scalars["nonfinite_total"] = float(jax.device_get(state.nonfinite_total))
    scalars.update(throughput.report(step))
    writer.write_scalars(step, {f"train/{name}": value for name, value in scalars.items()})
    logging.info("%s", throughput.progress_line(step, scalars))
    return scalars


def _write_operative_config(model_dir: str, writer, step: int) -> None:
    """Saves the gin bindings this run actually used (T5X's operative config) to MODEL_DIR and TensorBoard."""
    config = gin.operative_config_str()
    if jax.process_index() == 0:
        storage.write_text_atomic(storage.join(model_dir, "operative_config.gin"), config)
    writer.write_texts(step, {"config/operative": "\n".join("    " + line for line in config.splitlines())})


class _PeriodicTasks:
    """Held-out loss by diffusion-time bucket, and sample videos, on the validation split."""

    def __init__(self, adapter, diffusion, dataset_fn, mesh, writer, model_dir, seed, local_batch_size, eval_rng,
                 sample_rng, eval_batches, eval_time_buckets, sample_count, sample_steps, sample_guidance_weight,
                 sample_fps):
        self.dataset_fn, self.mesh, self.writer, self.model_dir = dataset_fn, mesh, writer, model_dir
        self.seed, self.local_batch_size = seed, local_batch_size
        self.eval_rng, self.sample_rng = eval_rng, sample_rng
        self.eval_batches, self.buckets, self.fps = eval_batches, eval_time_buckets, sample_fps
        self.eval_fn = jax.jit(lambda params, batch, te, rng: step_lib.eval_step(
            params, batch, te, rng, adapter=adapter, config=diffusion, num_buckets=eval_time_buckets))
        self.sample_fn = jax.jit(lambda params, batch, te, rng: samples_lib.generate(
            params, jax.tree.map(lambda leaf: leaf[:sample_count], batch), te, rng, adapter=adapter,
            config=diffusion, num_steps=sample_steps, guidance_weight=sample_guidance_weight))

    @staticmethod
    def ran_at(step: int, eval_every_steps: int, sample_every_steps: int) -> bool:
        return bool((eval_every_steps and step % eval_every_steps == 0) or
                    (sample_every_steps and step % sample_every_steps == 0))

    def _validation_batches(self, count: int):
        iterator = self.dataset_fn("validation", self.local_batch_size, self.seed, jax.process_index(),
                                   jax.process_count())
        return [global_arrays.make_global_batch(next(iterator), self.mesh) for _ in range(count)]

    def evaluate(self, step: int, params, text_encoder_params) -> None:
        losses = [self.eval_fn(params, batch, text_encoder_params, jax.random.fold_in(self.eval_rng, index))
                  for index, batch in enumerate(self._validation_batches(self.eval_batches))]
        by_bucket = np.mean(np.asarray(jax.device_get(losses)), axis=0)
        scalars = {f"eval/loss_t{k / self.buckets:.2f}-{(k + 1) / self.buckets:.2f}": float(value)
                   for k, value in enumerate(by_bucket)}
        scalars["eval/loss"] = float(np.mean(by_bucket))
        self.writer.write_scalars(step, scalars)
        logging.info("eval at step %d: loss %.4f by t bucket %s", step, scalars["eval/loss"],
                     np.round(by_bucket, 4).tolist())

    def sample(self, step: int, params, text_encoder_params) -> None:
        (batch,) = self._validation_batches(1)
        videos = self.sample_fn(params, batch, text_encoder_params, self.sample_rng)
        frames = samples_lib.to_uint8_frames(multihost_utils.process_allgather(videos, tiled=True))
        self.writer.write_images(step, {"samples": samples_lib.filmstrips(frames)})
        if jax.process_index() == 0:
            samples_lib.write_videos(storage.join(self.model_dir, "samples"), step, frames, self.fps)
