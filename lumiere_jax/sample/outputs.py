"""Per-row outputs of a sampling job, written atomically so that a killed job leaves no half files.

OUTPUT_DIR may be a local folder or a `gs://` URI (every file goes through lumiere_jax/storage.py).

Layout of OUTPUT_DIR (one set per row, named by the row id):
  <id>.mp4       H.264 video (PyAV)
  <id>.gif       optional animated GIF
  <id>.npy       optional uint8 frames [T, H, W, 3] (exact pixels, for evaluation)
  <id>.json      sidecar: prompt, seed, mode, checkpoints and steps, sampling config, timings, and `files` (the
                 row's files, relative to OUTPUT_DIR). Written last: a row is finished exactly when its sidecar
                 exists and names this layout's mp4, which is what a rerun checks.
  config.gin     the job's gin configuration; summary-<shard>-of-<n>.json: the summary of each job shard.
With layout "vbench" (vbench.py) the mp4 is `videos/{prompt}-{sample}.mp4` instead, the name VBench's evaluator
looks up, and `prompts.txt` lists the prompts; everything else stays as above (outside videos/, which must hold
only the videos).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping, Sequence

import gin
import numpy as np

from lumiere_jax import storage
from lumiere_jax.data import video_io
from lumiere_jax.sample import rows as rows_lib
from lumiere_jax.sample import vbench

LAYOUTS = ("default", "vbench")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class OutputConfig:
    """What a sampling job writes for each row besides its mp4 and sidecar.

    Attributes:
      fps: frame rate of the mp4 (and gif).
      write_gif: also an animated GIF.
      save_arrays: also the exact uint8 frames as `.npy` (what evaluation scores).
      layout: "default" (files named by row id) or "vbench" (mp4s named as the VBench suite reads them).
    """

    fps: float = 16.0
    write_gif: bool = False
    save_arrays: bool = False
    layout: str = "default"


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a job puts each row's mp4, and the files it writes once per job (both relative to OUTPUT_DIR)."""

    video_paths: Mapping[int, str] | None = None  # row index -> mp4 path; None: `<id>.mp4`
    job_files: Mapping[str, str] = dataclasses.field(default_factory=dict)  # path -> text

    def mp4(self, row: rows_lib.Row) -> str:
        return f"{row.id}.mp4" if self.video_paths is None else self.video_paths[row.index]

    def folders(self) -> list[str]:
        return sorted({path.rsplit("/", 1)[0] for path in (self.video_paths or {}).values() if "/" in path})


def make_layout(name: str, rows: Sequence[rows_lib.Row], prompts_path: str) -> Layout:
    """The layout `name` for `rows`, every row of the prompt file `prompts_path` (a sample number counts them all)."""
    if name == "default":
        return Layout()
    if name == "vbench":
        return Layout(vbench.video_paths(rows, prompts_path), {vbench.PROMPT_LIST: vbench.prompt_list(rows)})
    raise ValueError(f"layout={name!r} is unknown; use one of {LAYOUTS} ('vbench': the folder and file names the "
                     "VBench suite reads, see lumiere_jax/sample/vbench.py)")


def write_job_files(output_dir: str, layout: Layout) -> None:
    for path, text in layout.job_files.items():
        storage.write_text_atomic(storage.join(output_dir, path), text)


def listed_names(output_dir: str, layout: Layout) -> set[str]:
    """Paths relative to OUTPUT_DIR of the files in it and in the layout's folders, one listing per folder."""
    names = set(storage.listdir(output_dir))
    for folder in layout.folders():
        names |= {f"{folder}/{name}" for name in storage.listdir(storage.join(output_dir, folder))}
    return names


def sidecar_path(output_dir: str, row: rows_lib.Row) -> str:
    return storage.join(output_dir, f"{row.id}.json")


def _write_npy_atomic(path: str, frames: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, frames)
    storage.write_bytes_atomic(path, buffer.getvalue())


def is_finished(output_dir: str, row: rows_lib.Row, names_in_output_dir: set[str],
                layout: Layout = Layout()) -> bool:
    """True when the row's sidecar names the layout's mp4 and every file it lists exists; a sidecar for another
    prompt is an error.

    `names_in_output_dir`: `listed_names(output_dir, layout)`, listed once for all rows (on an object store a
    request per file and row would take minutes for 10,000 rows).
    """
    path = sidecar_path(output_dir, row)
    if f"{row.id}.json" not in names_in_output_dir:
        return False
    sidecar = storage.read_json(path)
    if sidecar.get("prompt") != row.prompt or sidecar.get("mode") != row.mode:
        raise ValueError(f"{path} belongs to another job (prompt {sidecar.get('prompt')!r}, mode "
                         f"{sidecar.get('mode')!r}; this row asks for {row.prompt!r}, {row.mode!r}); use a fresh "
                         "output directory or remove the old outputs")
    files = sidecar.get("files", {})
    return files.get("mp4") == layout.mp4(row) and all(name in names_in_output_dir for name in files.values())


def to_uint8(video: np.ndarray) -> np.ndarray:
    """`[T, H, W, 3]` in [-1, 1] -> uint8."""
    return np.round((np.clip(np.asarray(video, np.float32), -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def write_row(output_dir: str, row: rows_lib.Row, frames: np.ndarray, fps: float, sidecar: dict,
              write_gif: bool = False, save_array: bool = False, layout: Layout = Layout()) -> dict:
    """Writes the row's video files, then its sidecar (with `files` filled in); returns the sidecar."""
    files = {"mp4": layout.mp4(row)}
    video_io.write_mp4(storage.join(output_dir, files["mp4"]), frames, fps)
    if write_gif:
        files["gif"] = f"{row.id}.gif"
        video_io.write_gif(storage.join(output_dir, files["gif"]), frames, fps)
    if save_array:
        files["npy"] = f"{row.id}.npy"
        _write_npy_atomic(storage.join(output_dir, files["npy"]), frames)
    sidecar = {**sidecar, "files": files}
    storage.write_json_atomic(sidecar_path(output_dir, row), sidecar)
    return sidecar
