"""The batch sampling job, read top to bottom: rows -> models -> batches of equal settings -> videos on disk.

`sample_videos` is the gin entry point (`python -m lumiere_jax.sample`, see cli.py). Rows (rows.py) are
split over job shards (`shard_id`, `num_shards`); the rows of this shard that have no sidecar yet are
grouped by their static settings (`applications.StaticSettings`: steps, SDEdit strength, sampler, clip
length), cut into global batches (padded by repeating the last row), run through one jitted function sharded
over the mesh (batch over the data axes, parameters by their logical axes), gathered, and written by process 0.
Rerunning the same command skips finished rows, so a killed job completes where it stopped. Prompt files,
condition files, checkpoints and OUTPUT_DIR may be local or `gs://` (lumiere_jax/storage.py). Every row's
randomness comes from its own key: `PRNGKey(row seed)` if the row gives one, else
`fold_in(PRNGKey(job seed), row index)`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gin
import jax
import numpy as np
from jax.experimental import multihost_utils

from lumiere_jax import storage
from lumiere_jax.data import vocab
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.parallel import multihost
from lumiere_jax.parallel import partitioning
from lumiere_jax.sample import applications
from lumiere_jax.sample import base as base_stage
from lumiere_jax.sample import ssr as ssr_stage
from lumiere_jax.sample import conditions
from lumiere_jax.sample import outputs as outputs_lib
from lumiere_jax.sample import progress
from lumiere_jax.sample import rows as rows_lib
from lumiere_jax.sample import style
from lumiere_jax.sample import weights
from lumiere_jax.stages import adapter as adapter_lib
from lumiere_jax.stages import caching
from lumiere_jax.stages import text as text_lib
from lumiere_jax.stages.diffusion_config import DiffusionConfig

CONDITIONED_MODES = ("i2v", "inpaint", "cinemagraph", "extend")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ModelsConfig:
    """The models a job samples with: the base STUNet, optionally the SSR, and how their weights are read.

    The base model's checkpoint is the job's `base_checkpoint` (evaluation passes each step's).

    Attributes:
      base_adapter: the base model (a video or conditional stage).
      base_diffusion: its schedule (as trained).
      ssr_adapter: the SSR model; None samples base-resolution videos.
      ssr_checkpoint: its training run folder, step folder or exported inference checkpoint.
      ssr_diffusion: its schedule (as trained: resolution-shifted, sample/ssr.gin).
      use_ssr: False writes base-resolution videos even when an SSR model is configured.
      use_ema: the checkpoints' EMA weights (else the raw parameters).
      style_checkpoint: a T2I checkpoint blended into the base model's spatial layers (paper 4.1; style.py).
      style_alpha: its weight in the blend.
    """

    base_adapter: adapter_lib.ModelAdapter = gin.REQUIRED
    base_diffusion: DiffusionConfig = DiffusionConfig()
    ssr_adapter: adapter_lib.ModelAdapter | None = None
    ssr_checkpoint: str | None = None
    ssr_diffusion: DiffusionConfig = DiffusionConfig()
    use_ssr: bool = True
    use_ema: bool = True
    style_checkpoint: str | None = None
    style_alpha: float = 0.75

    def sampled_ssr_adapter(self) -> adapter_lib.ModelAdapter | None:
        """The SSR model the job runs, if any; it needs a checkpoint."""
        if self.ssr_adapter is None or not self.use_ssr:
            return None
        if not self.ssr_checkpoint:
            raise ValueError("an SSR model is configured but ssr_checkpoint is empty; set it, or sample base videos "
                             "only with --gin.ModelsConfig.use_ssr=False")
        return self.ssr_adapter


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TextConfig:
    """How prompts become text embeddings: the vocabulary and the frozen T5's weights.

    Attributes:
      text_encoder_params_fn: `rng -> params` loading the frozen T5 (`pretrained_text_encoder()`); None: the
        random init the trainer draws for `train.seed = train_seed`, matching runs that train with a random
        text encoder.
      train_seed: that training run's seed.
      sentencepiece_model: the vocabulary; None: bytes, as ByT5.
    """

    text_encoder_params_fn: Callable[[jax.Array], Any] | None = None
    train_seed: int = 0
    sentencepiece_model: str | None = None


def load_stage(adapter: adapter_lib.ModelAdapter, checkpoint: str, use_ema: bool, text: TextConfig,
               mesh: jax.sharding.Mesh, rules) -> applications.Stage:
    """One model's weights from `checkpoint` (refusing weights trained as another prediction target) and its frozen
    text encoder's, on `mesh` (call inside its mesh context)."""
    params, _ = weights.load_params(checkpoint, weights.abstract_params(adapter, mesh, rules), use_ema, adapter.name)
    text_params, _ = text_lib.load_text_encoder_params(adapter.text_encoder, text.text_encoder_params_fn,
                                                       text.train_seed, mesh, rules)
    return applications.Stage(adapter, params, text_params)


@dataclasses.dataclass
class JobResult:
    """What a run did: rows of this shard, rows skipped as already finished, rows generated, seconds."""

    rows_in_shard: int
    skipped: int
    generated: int
    seconds: float
    sidecars: list[dict]


def row_key_data(row: rows_lib.Row, job_seed: int) -> np.ndarray:
    """Raw key data `uint32 [2]` of the row: its own seed, or the job seed folded with the row index."""
    key = jax.random.key(row.seed) if row.seed is not None else jax.random.fold_in(jax.random.key(job_seed), row.index)
    return np.asarray(jax.random.key_data(key))


def row_t_start(row: rows_lib.Row, config: applications.SamplingConfig) -> float:
    if row.mode != "sdedit":
        return 1.0
    return row.strength if row.strength is not None else config.sdedit_strength


def _row_or_job(row: rows_lib.Row, config: applications.SamplingConfig, field: str):
    value = getattr(row, field)
    return value if value is not None else getattr(config, field)


def row_settings(row: rows_lib.Row, config: applications.SamplingConfig,
                 adapter: adapter_lib.ModelAdapter) -> applications.StaticSettings:
    """The row's compile-time settings (rows with equal settings share batches)."""
    return applications.StaticSettings(
        num_steps=_row_or_job(row, config, "num_steps"), t_start=row_t_start(row, config),
        sampler=_row_or_job(row, config, "sampler"),
        num_frames=_row_or_job(row, config, "num_frames") or adapter.sample_shape[0])


def check_row_fits(row: rows_lib.Row, adapter: adapter_lib.ModelAdapter) -> None:
    """Conditioned modes need the 7-channel <J, C, M> base model (PAPER.md 4.2)."""
    if row.mode in CONDITIONED_MODES and adapter.stage != "conditional":
        raise ValueError(f"row {row.id!r} asks for mode {row.mode!r}, which needs a conditional base model "
                         f"(stage='conditional', 7 input channels); the configured base model has stage "
                         f"{adapter.stage!r}. Sample it with a conditional checkpoint, or use mode t2v / sdedit")
    if adapter.stage not in adapter_lib.BASE_VIDEO_STAGES:
        raise ValueError(f"the base model must be a video model (stage one of {adapter_lib.BASE_VIDEO_STAGES}), "
                         f"got stage {adapter.stage!r}; set BASE_STAGE to 'stunet' or 'conditional'")
    if (row.num_frames or adapter.sample_shape[0]) < adapter.sample_shape[0]:
        raise ValueError(f"row {row.id!r} asks for num_frames={row.num_frames}, fewer than the base model's "
                         f"{adapter.sample_shape[0]} frames; sample {adapter.sample_shape[0]} or more and trim")


def _region(row: rows_lib.Row, source_shape: tuple[int, int], num_frames: int, height: int, width: int):
    if row.box is not None:
        return conditions.box_region(row.box, num_frames, height, width)
    return conditions.read_region(row.mask, source_shape, num_frames, height, width)


def row_inputs(row: rows_lib.Row, adapter: adapter_lib.ModelAdapter, config: applications.SamplingConfig,
               job_seed: int) -> dict[str, np.ndarray]:
    """Host arrays of one row for the base stage (no batch dim); condition files are read and fitted here."""
    _, height, width, _ = adapter.sample_shape
    num_frames = row_settings(row, config, adapter).num_frames
    arrays = {"keys": row_key_data(row, job_seed),
              "guidance_weight": np.float32(_row_or_job(row, config, "guidance_weight")),
              "guidance_rescale": np.float32(_row_or_job(row, config, "guidance_rescale")),
              "guidance_interval": np.asarray(_row_or_job(row, config, "guidance_interval"), np.float32)}
    if adapter.stage == "conditional":
        if row.mode == "i2v":
            condition, mask = conditions.image_to_video(
                conditions.fit_image(conditions.read_image(row.image), height, width), num_frames)
        elif row.mode == "inpaint":
            raw = conditions.read_video(row.video, num_frames)
            region = _region(row, raw.shape[1:3], num_frames, height, width)
            condition, mask = conditions.inpainting(conditions.fit_video(raw, height, width), region)
        elif row.mode == "cinemagraph":
            raw = conditions.read_image(row.image)
            region = _region(row, raw.shape[:2], num_frames, height, width)
            condition, mask = conditions.cinemagraph(conditions.fit_image(raw, height, width), region)
        elif row.mode == "extend":
            previous = conditions.fit_video(conditions.read_frames(row.video), height, width)
            condition, mask = conditions.video_extension(previous, _row_or_job(row, config, "context_frames"),
                                                         num_frames)
        else:
            condition, mask = conditions.text_to_video(num_frames, height, width)
        arrays["condition"], arrays["condition_mask"] = condition, mask
    if row.mode == "sdedit":
        arrays["init_video"] = conditions.fit_video(conditions.read_video(row.video, num_frames), height, width)
    return arrays


def _global_array(full: np.ndarray, mesh: jax.sharding.Mesh) -> jax.Array:
    """A host array holding the whole global batch -> a jax.Array split over the data axes (any host count)."""
    sharding = partitioning.batch_sharding(mesh, full.ndim)
    return jax.make_array_from_callback(full.shape, sharding, lambda index: full[index])


def _generate(base_params, base_text_params, ssr_params, ssr_text_params, batch, *, base_adapter, ssr_adapter,
              schedule, ssr_schedule, config, settings):
    """Base clip, then (optionally) SSR: `[B, T, H, W, 3]` in [-1, 1]."""
    base = applications.Stage(base_adapter, base_params, base_text_params)
    video = base_stage.generate_base(base, batch, schedule, config, settings.num_steps, settings=settings)
    if ssr_adapter is None:
        return video
    ssr = applications.Stage(ssr_adapter, ssr_params, ssr_text_params)
    return ssr_stage.upsample_ssr(ssr, video, batch, ssr_schedule, config)


class _Models:
    """Weights of the base (and SSR) stage on the mesh, and one compiled function per static setting."""

    def __init__(self, mesh, rules, models: ModelsConfig, base_checkpoint: str, text: TextConfig,
                 config: applications.SamplingConfig):
        self.mesh, self.config = mesh, config
        base_adapter, ssr_adapter = models.base_adapter, models.sampled_ssr_adapter()
        self.base_adapter, self.ssr_adapter = base_adapter, ssr_adapter
        self.base_params, self.base_info = weights.load_params(
            base_checkpoint, weights.abstract_params(base_adapter, mesh, rules), models.use_ema, base_adapter.name)
        self.style_info = None
        if models.style_checkpoint:
            style_params, info = weights.load_params(models.style_checkpoint, None, models.use_ema)
            self.base_params = style.interpolate_spatial(self.base_params, style_params, models.style_alpha)
            self.style_info = {**info, "alpha": models.style_alpha}
        self.base_text_params = text_lib.load_text_encoder_params(
            base_adapter.text_encoder, text.text_encoder_params_fn, text.train_seed, mesh, rules)[0]
        self.ssr_params = self.ssr_text_params = self.ssr_info = None
        if ssr_adapter is not None:
            self.ssr_params, self.ssr_info = weights.load_params(
                models.ssr_checkpoint, weights.abstract_params(ssr_adapter, mesh, rules), models.use_ema,
                ssr_adapter.name)
            same_encoder = ssr_adapter.text_encoder.config == base_adapter.text_encoder.config
            self.ssr_text_params = (self.base_text_params if same_encoder
                                    else text_lib.load_text_encoder_params(
                                        ssr_adapter.text_encoder, text.text_encoder_params_fn, text.train_seed,
                                        mesh, rules)[0])
        self.diffusion, self.ssr_diffusion = models.base_diffusion, models.ssr_diffusion

    def generate(self, batch: dict[str, jax.Array], settings: applications.StaticSettings) -> jax.Array:
        function = _cached_jit(caching.adapter_key(self.base_adapter), caching.adapter_key(self.ssr_adapter),
                               self.diffusion, self.ssr_diffusion, self.config, settings,
                               partitioning.batch_sharding(self.mesh, 5),
                               caching.Unhashed((self.base_adapter, self.ssr_adapter)))
        return function(self.base_params, self.base_text_params, self.ssr_params, self.ssr_text_params, batch)


@functools.lru_cache(maxsize=16)
def _cached_jit(base_key, ssr_key, diffusion, ssr_diffusion, config, settings, out_sharding, adapters):
    """One jitted sampler per (model architecture, settings); jit then caches per input shape and sharding."""
    base_adapter, ssr_adapter = adapters.value
    function = functools.partial(
        _generate, base_adapter=base_adapter, ssr_adapter=ssr_adapter, schedule=diffusion.schedule_fn,
        ssr_schedule=ssr_diffusion.schedule_fn, config=config, settings=settings)
    # Inputs are committed to their shardings (parameters by logical axes, batch over the data axes).
    return jax.jit(function, out_shardings=out_sharding)


def _tokenize(prompts: Sequence[str], adapter: adapter_lib.ModelAdapter, vocabulary) -> tuple[np.ndarray, np.ndarray]:
    return vocab.tokenize(list(prompts), vocabulary, adapter.text_length)


def _text_arrays(rows: Sequence[rows_lib.Row], adapter: adapter_lib.ModelAdapter, vocabulary,
                 config: applications.SamplingConfig, prefix: str) -> dict[str, np.ndarray]:
    """Prompt and negative-prompt tokens of a batch; rows without a negative prompt get an all-False mask,
    which the encoder turns into the null text the model was trained with."""
    negatives = [_row_or_job(row, config, "negative_prompt") for row in rows]
    tokens, mask = _tokenize([row.prompt for row in rows], adapter, vocabulary)
    negative_tokens, negative_mask = _tokenize(negatives, adapter, vocabulary)
    negative_mask &= np.array([bool(text) for text in negatives])[:, None]
    return {prefix + "tokens": tokens, prefix + "text_mask": mask, prefix + "negative_tokens": negative_tokens,
            prefix + "negative_text_mask": negative_mask}


def _stack(row_arrays: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.stack([arrays[name] for arrays in row_arrays]) for name in row_arrays[0]}


@gin.configurable
def sample_videos(
    output_dir: str = gin.REQUIRED,
    prompts: str = gin.REQUIRED,
    base_checkpoint: str = gin.REQUIRED,
    models: ModelsConfig = gin.REQUIRED,
    sampling: applications.SamplingConfig = applications.SamplingConfig(),
    text: TextConfig = TextConfig(),
    outputs: outputs_lib.OutputConfig = outputs_lib.OutputConfig(),
    mesh: mesh_lib.MeshConfig = mesh_lib.MeshConfig(),
    batch_size: int = 8,
    seed: int = 0,
    shard_id: int = 0,
    num_shards: int = 1,
) -> JobResult:
    """Samples one video per row of `prompts` into `output_dir`; see the module docstring and rows.py.

    `base_checkpoint`: a training run folder, step folder or exported inference checkpoint of
    `models.base_adapter`. `batch_size` is global and is rounded up to a multiple of the data-parallel mesh size.
    """
    start = time.perf_counter()
    all_rows = rows_lib.read_rows(prompts)
    layout = outputs_lib.make_layout(outputs.layout, all_rows, prompts)
    shard = rows_lib.shard_rows(all_rows, shard_id, num_shards)
    for row in shard:
        check_row_fits(row, models.base_adapter)
    todo = _rows_to_sample(shard, output_dir, layout)
    logging.info("shard %d of %d: %d rows, %d already finished, %d to sample", shard_id, num_shards, len(shard),
                 len(shard) - len(todo), len(todo))
    models.sampled_ssr_adapter()  # a missing SSR checkpoint fails before anything is loaded
    device_mesh = mesh.make_mesh()
    global_batch = _global_batch_size(batch_size, device_mesh)
    sidecars = []
    if todo:
        with mesh_lib.mesh_context(device_mesh, mesh.rules):
            loaded = _Models(device_mesh, mesh.rules, models, base_checkpoint, text, sampling)
            vocabulary = vocab.get_vocabulary(text.sentencepiece_model)
            run_info = _run_info(loaded, sampling, seed, outputs)
            if jax.process_index() == 0:
                storage.write_text_atomic(storage.join(output_dir, "config.gin"), gin.config_str())
                outputs_lib.write_job_files(output_dir, layout)
            bar = progress.ProgressBar(len(todo), description=f"sampling shard {shard_id}/{num_shards}")
            for settings, chunk in _batches(todo, sampling, models.base_adapter, global_batch):
                sidecars += _run_batch(loaded, chunk, global_batch, settings, vocabulary, seed, output_dir, outputs,
                                       run_info, first_call=not sidecars, layout=layout)
                bar.update(len(chunk))
    seconds = time.perf_counter() - start
    result = JobResult(rows_in_shard=len(shard), skipped=len(shard) - len(todo), generated=len(todo),
                       seconds=seconds, sidecars=sidecars)
    _write_summary(result, len(all_rows), output_dir, shard_id, num_shards)
    return result


def _global_batch_size(batch_size: int, mesh: jax.sharding.Mesh) -> int:
    """`batch_size` rounded up to a multiple of the data-parallel devices."""
    ways = mesh_lib.data_axis_size(mesh)
    global_batch = -(-batch_size // ways) * ways
    if global_batch != batch_size:
        logging.info("batch_size=%d rounded up to %d, a multiple of the %d data-parallel devices", batch_size,
                     global_batch, ways)
    return global_batch


def _run_info(models: _Models, sampling: applications.SamplingConfig, job_seed: int,
              outputs: outputs_lib.OutputConfig) -> dict:
    """What every sidecar of the job records about its models and settings."""
    return {"base_checkpoint": models.base_info, "ssr_checkpoint": models.ssr_info, "style": models.style_info,
            "sampling": dataclasses.asdict(sampling),
            "diffusion": {"schedule": models.diffusion.schedule, "schedule_kwargs": models.diffusion.schedule_kwargs},
            "job_seed": job_seed, "fps": outputs.fps, "ssr": models.ssr_adapter is not None, "layout": outputs.layout}


def _batches(rows: list[rows_lib.Row], sampling: applications.SamplingConfig, base_adapter: adapter_lib.ModelAdapter,
             global_batch: int) -> Iterator[tuple[applications.StaticSettings, list[rows_lib.Row]]]:
    """Rows grouped by their static settings (in order of first appearance), cut into batches of `global_batch`."""
    groups: dict[applications.StaticSettings, list[rows_lib.Row]] = {}
    for row in rows:
        groups.setdefault(row_settings(row, sampling, base_adapter), []).append(row)
    for settings, group in groups.items():
        for first in range(0, len(group), global_batch):
            yield settings, group[first:first + global_batch]


def _write_summary(result: JobResult, rows_in_file: int, output_dir: str, shard_id: int, num_shards: int) -> None:
    """Process 0 writes `summary-<shard>-of-<n>.json`; every process logs it."""
    seconds = result.seconds
    summary = {"rows_in_file": rows_in_file, "rows_in_shard": result.rows_in_shard,
               "skipped_finished": result.skipped, "generated": result.generated, "seconds": round(seconds, 3),
               "rows_per_second": round(result.generated / seconds, 4) if seconds > 0 else None,
               "shard_id": shard_id, "num_shards": num_shards, "output_dir": storage.normalize(output_dir)}
    if jax.process_index() == 0:
        storage.write_json_atomic(storage.join(output_dir, f"summary-{shard_id}-of-{num_shards}.json"), summary)
    logging.info("done: %d generated, %d already finished, %d rows in shard, %.1f s (%s)", result.generated,
                 result.skipped, result.rows_in_shard, seconds, output_dir)


def _rows_to_sample(shard: list[rows_lib.Row], output_dir: str, layout: outputs_lib.Layout) -> list[rows_lib.Row]:
    """The shard's rows without finished outputs, as process 0 sees them: every host samples the same batches."""
    names_in_output_dir = outputs_lib.listed_names(output_dir, layout)
    unfinished = np.array([not outputs_lib.is_finished(output_dir, row, names_in_output_dir, layout)
                           for row in shard], bool)
    unfinished = multihost.from_first_host(unfinished)
    return [row for row, todo in zip(shard, unfinished) if todo]


def _run_batch(models: _Models, chunk: list[rows_lib.Row], global_batch: int,
               settings: applications.StaticSettings, vocabulary, job_seed: int, output_dir: str,
               outputs: outputs_lib.OutputConfig, run_info: dict, first_call: bool,
               layout: outputs_lib.Layout) -> list[dict]:
    """Samples one padded batch and writes its real rows; returns their sidecars."""
    batch_start = time.perf_counter()
    padded = chunk + [chunk[-1]] * (global_batch - len(chunk))
    host = _stack([row_inputs(row, models.base_adapter, models.config, job_seed) for row in padded])
    host.update(_text_arrays(padded, models.base_adapter, vocabulary, models.config, ""))
    if models.ssr_adapter is not None:
        host.update(_text_arrays(padded, models.ssr_adapter, vocabulary, models.config, "ssr_"))
    batch = {name: _global_array(value, models.mesh) for name, value in host.items()}
    videos = models.generate(batch, settings)
    videos = np.asarray(multihost_utils.process_allgather(videos, tiled=True))
    seconds = time.perf_counter() - batch_start
    sidecars = []
    for position, (row, video) in enumerate(zip(chunk, videos)):
        sidecar = {
            "id": row.id, "index": row.index, "prompt": row.prompt, "mode": row.mode, "seed": row.seed,
            "key": "PRNGKey(seed)" if row.seed is not None else "fold_in(PRNGKey(job_seed), index)",
            "row": row.to_json(), "num_steps": settings.num_steps, "t_start": settings.t_start,
            "sampler": settings.sampler, "negative_prompt": _row_or_job(row, models.config, "negative_prompt"),
            "guidance_rescale": float(host["guidance_rescale"][position]),
            "guidance_interval": host["guidance_interval"][position].tolist(),
            "guidance_weight": float(host["guidance_weight"][position]),
            "frames": int(video.shape[0]), "height": int(video.shape[1]), "width": int(video.shape[2]),
            "timings": {"batch_seconds": round(seconds, 4), "rows_in_batch": len(chunk), "batch_size": global_batch,
                        "first_batch_of_run": first_call},
            **run_info,
        }
        if jax.process_index() == 0:
            sidecar = outputs_lib.write_row(output_dir, row, outputs_lib.to_uint8(video), outputs.fps, sidecar,
                                            outputs.write_gif, outputs.save_arrays, layout=layout)
        sidecars.append(sidecar)
    return sidecars
