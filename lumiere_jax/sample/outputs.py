"""Per-row outputs of a sampling job, written atomically so that a killed job leaves no half files.

OUTPUT_DIR may be a local folder or a `gs://` URI (every file goes through lumiere_jax/storage.py).

Layout of OUTPUT_DIR (one set per row, named by the row id):
  <id>.mp4       H.264 video (PyAV)
  <id>.gif       optional animated GIF
  <id>.npy       optional uint8 frames [T, H, W, 3] (exact pixels, for evaluation)
  <id>.json      sidecar: prompt, seed, mode, checkpoints and steps, sampling config, timings. Written last:
                 a row is finished exactly when its sidecar exists, which is what a rerun checks.
  config.gin     the job's gin configuration; summary-<shard>-of-<n>.json: the summary of each job shard.
"""

from __future__ import annotations

import io

import numpy as np

from lumiere_jax import storage
from lumiere_jax.data import video_io
from lumiere_jax.sample import rows as rows_lib


def sidecar_path(output_dir: str, row: rows_lib.Row) -> str:
    return storage.join(output_dir, f"{row.id}.json")


def _write_npy_atomic(path: str, frames: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, frames)
    storage.write_bytes_atomic(path, buffer.getvalue())


def is_finished(output_dir: str, row: rows_lib.Row, names_in_output_dir: set[str]) -> bool:
    """True when the row's sidecar and every file it lists exist; a sidecar for another prompt is an error.

    `names_in_output_dir`: `storage.listdir(output_dir)`, listed once for all rows (on an object store a
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
    return all(name in names_in_output_dir for name in sidecar.get("files", {}).values())


def to_uint8(video: np.ndarray) -> np.ndarray:
    """`[T, H, W, 3]` in [-1, 1] -> uint8."""
    return np.round((np.clip(np.asarray(video, np.float32), -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def write_row(output_dir: str, row: rows_lib.Row, frames: np.ndarray, fps: float, sidecar: dict,
              write_gif: bool = False, save_array: bool = False) -> dict:
    """Writes the row's video files, then its sidecar (with `files` filled in); returns the sidecar."""
    files = {"mp4": f"{row.id}.mp4"}
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
