"""Video generators of the evaluation job: a checkpoint + prompts + seeds -> uint8 videos.

`sampling_job_generator` runs the batch sampling job (`lumiere_jax.sample.job.sample_videos`, configured by
the same gin files as `python -m lumiere_jax.sample`) on one checkpoint, writing its rows with their seeds to
`<work_dir>/prompts.jsonl` and the videos (+ exact `.npy` frames) to `<work_dir>`, with the output settings
gin binds to `OutputConfig` (and `save_arrays` on). The sampling job skips
rows that are already finished, so a killed evaluation also resumes inside a checkpoint. `work_dir` may be local
or `gs://` (lumiere_jax/storage.py).
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Sequence

import gin
import jax
import numpy as np

from lumiere_jax import storage
from lumiere_jax.parallel import multihost


def write_rows(path: str, prompts: Sequence[str], seeds: Sequence[int]) -> list[str]:
    """Writes a sampling-job .jsonl (one row per prompt with its seed); returns the row ids."""
    ids = [f"{index:06d}" for index in range(len(prompts))]
    storage.write_text_atomic(path, "".join(json.dumps({"id": row_id, "prompt": prompt, "seed": int(seed)}) + "\n"
                                            for row_id, prompt, seed in zip(ids, prompts, seeds)))
    return ids


def load_npy(path: str) -> np.ndarray:
    """A local `.npy` memory-mapped; one on an object store read whole (one video)."""
    if storage.is_uri(path):
        return np.load(io.BytesIO(storage.read_bytes(path)))
    return np.load(path, mmap_mode="r")


class NpyVideos(Sequence):
    """Videos stored as `.npy` files, loaded on access (10,000 UCF101 samples do not fit in RAM)."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [load_npy(path) for path in self.paths[index]]
        return load_npy(self.paths[index])


@gin.configurable
def sampling_job_generator(step_dir: str, prompts: Sequence[str], seeds: Sequence[int], work_dir: str) -> NpyVideos:
    """Samples one video per prompt from the checkpoint `step_dir` with the sampling job."""
    from lumiere_jax.sample import job as sample_job  # noqa: PLC0415 -- the sampler is only needed here
    from lumiere_jax.sample import outputs as sample_outputs  # noqa: PLC0415

    rows_path = storage.join(work_dir, "prompts.jsonl")
    ids = [f"{index:06d}" for index in range(len(prompts))]
    if jax.process_index() == 0:
        write_rows(rows_path, prompts, seeds)
    _after_process_0_wrote("lumiere_evaluation_rows")
    outputs = dataclasses.replace(sample_outputs.OutputConfig(), save_arrays=True)  # the frames it scores
    sample_job.sample_videos(output_dir=work_dir, prompts=rows_path, base_checkpoint=step_dir, outputs=outputs)
    _after_process_0_wrote("lumiere_evaluation_videos")  # every host scores the videos process 0 wrote
    return NpyVideos([storage.join(work_dir, f"{row_id}.npy") for row_id in ids])


def _after_process_0_wrote(name: str) -> None:
    """Waits for process 0's writes on every host, then drops cached listings that predate them."""
    if jax.process_count() > 1:
        multihost.barrier(name)
        storage.invalidate_listing_cache()
