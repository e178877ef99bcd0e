"""Per-row outputs of a sampling job, written atomically so that a killed job leaves no half files.

Layout of OUTPUT_DIR (one set per row, named by the row id):
  <id>.mp4       H.264 video (PyAV)
  <id>.gif       optional animated GIF
  <id>.npy       optional uint8 frames [T, H, W, 3] (exact pixels, for evaluation)
  <id>.json      sidecar: prompt, seed, mode, checkpoints and steps, sampling config, timings. Written last:
                 a row is finished exactly when its sidecar exists, which is what a rerun checks.
  config.gin     the job's gin configuration; summary-<shard>-of-<n>.json: the summary of each job shard.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from lumiere_jax.data import video_io
from lumiere_jax.sample import rows as rows_lib


def sidecar_path(output_dir: str, row: rows_lib.Row) -> str:
    return os.path.join(output_dir, f"{row.id}.json")


def write_json_atomic(path: str, payload: dict) -> None:
    """Writes JSON to a temporary file in the same folder, then renames it onto `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".json", dir=folder, prefix=".tmp_")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(payload, file, indent=2, sort_keys=True)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _write_npy_atomic(path: str, frames: np.ndarray) -> None:
    handle, temporary = tempfile.mkstemp(suffix=".npy", dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp_")
    try:
        with os.fdopen(handle, "wb") as file:
            np.save(file, frames)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def is_finished(output_dir: str, row: rows_lib.Row) -> bool:
    """True when the row's sidecar and every file it lists exist; a sidecar for another prompt is an error."""
    path = sidecar_path(output_dir, row)
    if not os.path.isfile(path):
        return False
    with open(path) as file:
        sidecar = json.load(file)
    if sidecar.get("prompt") != row.prompt or sidecar.get("mode") != row.mode:
        raise ValueError(f"{path} belongs to another job (prompt {sidecar.get('prompt')!r}, mode "
                         f"{sidecar.get('mode')!r}; this row asks for {row.prompt!r}, {row.mode!r}); use a fresh "
                         "output directory or remove the old outputs")
    return all(os.path.isfile(os.path.join(output_dir, name)) for name in sidecar.get("files", {}).values())


def to_uint8(video: np.ndarray) -> np.ndarray:
    """`[T, H, W, 3]` in [-1, 1] -> uint8."""
    return np.round((np.clip(np.asarray(video, np.float32), -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def write_row(output_dir: str, row: rows_lib.Row, frames: np.ndarray, fps: float, sidecar: dict,
              write_gif: bool = False, save_array: bool = False) -> dict:
    """Writes the row's video files, then its sidecar (with `files` filled in); returns the sidecar."""
    files = {"mp4": f"{row.id}.mp4"}
    video_io.write_mp4(os.path.join(output_dir, files["mp4"]), frames, fps)
    if write_gif:
        files["gif"] = f"{row.id}.gif"
        video_io.write_gif(os.path.join(output_dir, files["gif"]), frames, fps)
    if save_array:
        files["npy"] = f"{row.id}.npy"
        _write_npy_atomic(os.path.join(output_dir, files["npy"]), frames)
    sidecar = {**sidecar, "files": files}
    write_json_atomic(sidecar_path(output_dir, row), sidecar)
    return sidecar
