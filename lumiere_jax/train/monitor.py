"""What the training loop reports besides the step: progress lines with train/ scalars, held-out loss by
diffusion-time bucket and preview videos, both on the validation split (gin: `train.monitor = @MonitorConfig()`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import gin
import jax
import numpy as np
from jax.experimental import multihost_utils

from lumiere_jax import storage
from lumiere_jax.parallel import chips as chips_lib
from lumiere_jax.stages import adapter as adapter_lib
from lumiere_jax.stages.diffusion_config import DiffusionConfig
from lumiere_jax.train import metrics as metrics_lib
from lumiere_jax.train import previews as previews_lib
from lumiere_jax.train import state as state_lib
from lumiere_jax.train import step as step_lib


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Held-out loss on the validation split, reported by diffusion-time bucket.

    Attributes:
      every_steps: evaluation period (0: never).
      batches: validation batches per evaluation.
      time_buckets: equal buckets of t in [0, 1] the loss is reported by (eval/loss_t0.00-0.25, ...).
    """

    every_steps: int = 0
    batches: int = 1
    time_buckets: int = 4


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PreviewConfig:
    """Sample videos of the first validation examples, to TensorBoard and MODEL_DIR/samples.

    Attributes:
      every_steps: preview period (0: never).
      count: examples of a validation batch that are sampled.
      num_steps: sampler steps.
      guidance_weight: classifier-free guidance weight.
      fps: frame rate of the written videos.
    """

    every_steps: int = 0
    count: int = 4
    num_steps: int = 16
    guidance_weight: float = 3.0
    fps: float = 16.0


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MonitorConfig:
    """How the loop reports on a run.

    Attributes:
      log_every_steps: period of the progress line and the train/ scalars (the last step always reports).
      max_consecutive_nonfinite: training stops when this many steps in a row had a non-finite loss or gradient
        (checked at each report).
      evaluation: held-out loss (`EvalConfig`).
      previews: sample videos (`PreviewConfig`).
      chips: peak FLOP/s and HBM per device kind for MFU and the compiled step's memory check (`ChipSpecs`).
    """

    log_every_steps: int = 50
    max_consecutive_nonfinite: int = 10
    evaluation: EvalConfig = EvalConfig()
    previews: PreviewConfig = PreviewConfig()
    chips: chips_lib.ChipSpecs = chips_lib.ChipSpecs()


def _due(step: int, every_steps: int) -> bool:
    return bool(every_steps and step % every_steps == 0)


class Monitor:
    """Progress reports every `log_every_steps`, evaluation and previews at their periods.

    `validation_batches(count)` returns the first `count` global batches of the validation split.
    """

    def __init__(self, config: MonitorConfig, adapter: adapter_lib.ModelAdapter, diffusion: DiffusionConfig,
                 validation_batches: Callable[[int], list[dict]], throughput: metrics_lib.Throughput, writer,
                 model_dir: str, eval_rng: jax.Array, sample_rng: jax.Array):
        self.config, self.validation_batches, self.throughput = config, validation_batches, throughput
        self.writer, self.model_dir = writer, model_dir
        self.eval_rng, self.sample_rng = eval_rng, sample_rng
        evaluation, previews = config.evaluation, config.previews
        self.eval_fn = jax.jit(lambda params, batch, te, rng: step_lib.eval_step(
            params, batch, te, rng, adapter=adapter, config=diffusion, num_buckets=evaluation.time_buckets))
        self.sample_fn = jax.jit(lambda params, batch, te, rng: previews_lib.generate(
            params, jax.tree.map(lambda leaf: leaf[:previews.count], batch), te, rng, adapter=adapter,
            config=diffusion, num_steps=previews.num_steps, guidance_weight=previews.guidance_weight))

    def reports_at(self, step: int, last_step: int) -> bool:
        return step % self.config.log_every_steps == 0 or step == last_step

    def report(self, step: int, window: list[dict], state: state_lib.TrainState) -> dict[str, float]:
        """Summarises the step metrics since the last report; writes train/ scalars and logs the progress line."""
        scalars = metrics_lib.summarize(window)
        scalars["nonfinite_total"] = float(jax.device_get(state.nonfinite_total))
        scalars.update(self.throughput.report(step))
        self.writer.write_scalars(step, {f"train/{name}": value for name, value in scalars.items()})
        logging.info("%s", self.throughput.progress_line(step, scalars))
        return scalars

    def validate(self, step: int, params: Any, text_encoder_params: Any) -> None:
        """Evaluates and previews when their periods fall on `step`."""
        evaluated = _due(step, self.config.evaluation.every_steps)
        previewed = _due(step, self.config.previews.every_steps)
        if evaluated:
            self._evaluate(step, params, text_encoder_params)
        if previewed:
            self._preview(step, params, text_encoder_params)
        if evaluated or previewed:
            self.throughput.restart(step)  # rates measure training only

    def _evaluate(self, step: int, params: Any, text_encoder_params: Any) -> None:
        buckets = self.config.evaluation.time_buckets
        losses = [self.eval_fn(params, batch, text_encoder_params, jax.random.fold_in(self.eval_rng, index))
                  for index, batch in enumerate(self.validation_batches(self.config.evaluation.batches))]
        by_bucket = np.mean(np.asarray(jax.device_get(losses)), axis=0)
        scalars = {f"eval/loss_t{k / buckets:.2f}-{(k + 1) / buckets:.2f}": float(value)
                   for k, value in enumerate(by_bucket)}
        scalars["eval/loss"] = float(np.mean(by_bucket))
        self.writer.write_scalars(step, scalars)
        logging.info("eval at step %d: loss %.4f by t bucket %s", step, scalars["eval/loss"],
                     np.round(by_bucket, 4).tolist())

    def _preview(self, step: int, params: Any, text_encoder_params: Any) -> None:
        (batch,) = self.validation_batches(1)
        videos = self.sample_fn(params, batch, text_encoder_params, self.sample_rng)
        frames = previews_lib.to_uint8_frames(multihost_utils.process_allgather(videos, tiled=True))
        self.writer.write_images(step, {"samples": previews_lib.filmstrips(frames)})
        if jax.process_index() == 0:
            previews_lib.write_videos(storage.join(self.model_dir, "samples"), step, frames,
                                     self.config.previews.fps)
