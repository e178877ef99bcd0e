"""The evaluation job: checkpoints of a run -> generated videos -> metrics -> TensorBoard + one JSON each.

For each checkpoint step of `MODEL_DIR/checkpoints/<step>` (every finished one, or the given steps), the
generator samples one video per (prompt, seed) pair, every metric scores them, the scalars go to TensorBoard
in `MODEL_DIR/eval/<name>/` and the full result to `MODEL_DIR/eval/<name>/metrics_<step>.json`. The JSON is
written last and atomically: a step is finished exactly when its JSON exists, so a killed job resumes with
the first unfinished step (a step killed after its TensorBoard write but before its JSON is recomputed and
logged again at the same step). With `watch` (a `WatchConfig`) the job polls for new checkpoints until its
`final_step` is evaluated or no new checkpoint appears for `idle_timeout_s` seconds. MODEL_DIR may be local or `gs://`
(lumiere_jax/storage.py; TensorBoard files of a `gs://` run are written locally and uploaded after each step).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable, Sequence

import gin
import jax
import numpy as np
from clu import metric_writers

from lumiere_jax import storage
from lumiere_jax.evaluate import metrics as metrics_lib
from lumiere_jax.parallel import multihost
from lumiere_jax.stages import checkpoint_layout

EVAL_SUBDIR = "eval"

# (step directory, prompts, seeds, work directory) -> uint8 videos [T, H, W, 3], one per prompt (a list or a
# lazy sequence such as generators.NpyVideos).
Generator = Callable[[str, Sequence[str], Sequence[int], str], Sequence[np.ndarray]]


@gin.configurable
@dataclasses.dataclass(frozen=True)
class WatchConfig:
    """Evaluation of a run that is still training: new checkpoints are evaluated as they appear.

    Attributes:
      final_step: stop once this step is evaluated (None: stop only when idle; with `steps`, once they are done).
      poll_seconds: wait between looks for new checkpoints.
      idle_timeout_s: stop when no new checkpoint appeared for this long.
    """

    final_step: int | None = None
    poll_seconds: float = 60.0
    idle_timeout_s: float = 3600.0


def finished_checkpoint_steps(model_dir: str) -> list[int]:
    """Steps under MODEL_DIR/checkpoints whose Orbax state is complete (in-progress saves are skipped)."""
    directory = storage.join(model_dir, checkpoint_layout.CHECKPOINTS_SUBDIR)
    steps = []
    for name in storage.listdir(directory):
        state = storage.join(directory, name, "state")
        if name.isdigit() and any(storage.isfile(storage.join(state, marker))
                                  for marker in ("_METADATA", "commit_success.txt")):
            steps.append(int(name))
    return sorted(steps)


def metrics_path(eval_dir: str, step: int) -> str:
    return storage.join(eval_dir, f"metrics_{step:08d}.json")


def evaluated_steps(eval_dir: str) -> set[int]:
    """Steps whose metrics JSON exists."""
    return {int(name[len("metrics_"):-len(".json")]) for name in storage.listdir(eval_dir)
            if name.startswith("metrics_") and name.endswith(".json")}


class _EventFiles:
    """TensorBoard event files for `eval_dir`: TensorFlow writes them itself, so for a URI they are written
    to a local folder and uploaded after every flush (`sync`); a local `eval_dir` is written in place."""

    def __init__(self, eval_dir: str):
        self.eval_dir = eval_dir
        self._staging = tempfile.TemporaryDirectory(prefix="lumiere_events_") if storage.is_uri(eval_dir) else None
        self.local_dir = self._staging.name if self._staging else eval_dir

    def sync(self) -> None:
        if self._staging:
            storage.copy_tree(self.local_dir, self.eval_dir)

    def close(self) -> None:
        self.sync()
        if self._staging:
            self._staging.cleanup()


def evaluate_step(step_dir: str, step: int, prompts: Sequence[str], seeds: Sequence[int], generator: Generator,
                  metrics: Sequence[metrics_lib.Metric], work_dir: str) -> dict:
    """Generates and scores the videos of one checkpoint; returns the JSON payload."""
    start = time.perf_counter()
    videos = generator(step_dir, prompts, seeds, work_dir)
    if len(videos) != len(prompts):
        raise RuntimeError(f"the generator returned {len(videos)} videos for {len(prompts)} prompts")
    generation_seconds = time.perf_counter() - start
    scalars = {}
    for metric in metrics:
        values = metric.compute(videos, prompts)
        overlap = set(values) & set(scalars)
        if overlap:
            raise ValueError(f"metric {metric.name!r} reports {sorted(overlap)} again; give each metric once")
        scalars.update({key: float(value) for key, value in values.items()})
    return {"step": step, "checkpoint": step_dir, "num_videos": len(videos),
            "video_shape": list(videos[0].shape) if videos else None, "metrics": scalars,
            "metric_names": [metric.name for metric in metrics],
            "seconds": {"generation": round(generation_seconds, 3),
                        "metrics": round(time.perf_counter() - start - generation_seconds, 3)}}


@gin.configurable
def evaluate(
    model_dir: str = gin.REQUIRED,
    prompts: Sequence[str] = gin.REQUIRED,
    metrics: Sequence[metrics_lib.Metric] = gin.REQUIRED,
    generator: Generator = gin.REQUIRED,
    name: str = "default",
    steps: Sequence[int] | None = None,
    samples_per_prompt: int = 1,
    seed: int = 0,
    watch: WatchConfig | None = None,
    keep_videos: bool = True,
) -> dict[int, dict]:
    """Evaluates the checkpoints of `model_dir`; returns `{step: payload}` of the steps computed in this call.

    `prompts` are repeated `samples_per_prompt` times; sample i uses seed `seed + i` at every checkpoint, so
    checkpoints are compared on the same noise. `steps`: only these (they must exist unless `watch`).
    `watch`: keep polling for new checkpoints (None: evaluate the finished ones and return).
    Generated videos stay in `MODEL_DIR/eval/<name>/videos/<step>/` unless `keep_videos=False` (10,000
    UCF101 samples take tens of GB per checkpoint).
    """
    if not prompts:
        raise ValueError("the prompt set is empty; configure evaluate.prompts")
    eval_dir = storage.join(storage.normalize(model_dir), EVAL_SUBDIR, name)
    storage.makedirs(eval_dir)
    all_prompts = [prompt for prompt in prompts for _ in range(samples_per_prompt)]
    seeds = [seed + index for index in range(len(all_prompts))]
    # Every host generates (the sampling job is multi-host) and scores; process 0 writes.
    is_writer = jax.process_index() == 0
    events = _EventFiles(eval_dir)
    writer = metric_writers.create_default_writer(events.local_dir, just_logging=not is_writer, asynchronous=False)
    computed: dict[int, dict] = {}
    last_new = time.monotonic()
    try:
        while True:
            available = finished_checkpoint_steps(model_dir)
            if steps is not None:
                missing = sorted(set(steps) - set(available))
                if missing and watch is None:
                    raise FileNotFoundError(f"no finished checkpoint for steps {missing} in {model_dir}/"
                                            f"{checkpoint_layout.CHECKPOINTS_SUBDIR}; available: {available}")
                available = [step for step in available if step in set(steps)]
            # Process 0's view decides for all hosts (they generate the same batches together).
            todo = multihost.ints_from_first_host([step for step in available if step not in evaluated_steps(eval_dir)])
            for step in todo:
                step_dir = storage.join(model_dir, checkpoint_layout.CHECKPOINTS_SUBDIR, str(step))
                logging.info("evaluating %s (%d videos, metrics %s)", step_dir, len(all_prompts),
                             [metric.name for metric in metrics])
                work_dir = storage.join(eval_dir, "videos", f"{step:08d}")
                payload = evaluate_step(step_dir, step, all_prompts, seeds, generator, metrics, work_dir)
                writer.write_scalars(step, payload["metrics"])
                writer.flush()
                if is_writer:
                    events.sync()
                    storage.write_json_atomic(metrics_path(eval_dir, step), payload)
                    if not keep_videos:
                        storage.remove(work_dir)
                computed[step] = payload
                last_new = time.monotonic()
            if watch is None or multihost.from_first_host(np.bool_(_all_done(eval_dir, steps, watch.final_step))):
                return computed
            if time.monotonic() - last_new > watch.idle_timeout_s:
                logging.info("no new checkpoint for %.0f s; stopping", watch.idle_timeout_s)
                return computed
            time.sleep(watch.poll_seconds)
    finally:
        writer.close()
        events.close()


def _all_done(eval_dir: str, steps: Sequence[int] | None, final_step: int | None) -> bool:
    done = evaluated_steps(eval_dir)
    if steps is not None:
        return set(steps) <= done
    return final_step is not None and final_step in done


def read_results(model_dir: str, name: str = "default") -> dict[int, dict]:
    """`{step: payload}` of every finished step of an evaluation."""
    eval_dir = storage.join(storage.normalize(model_dir), EVAL_SUBDIR, name)
    return {step: storage.read_json(metrics_path(eval_dir, step)) for step in sorted(evaluated_steps(eval_dir))}
