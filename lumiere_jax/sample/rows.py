"""Rows of a sampling job: one video each, read from a prompt file (.txt, .jsonl or .csv).

  .txt    one prompt per line (blank lines skipped); every other option takes the job's default.
  .jsonl  one JSON object per line; .csv: a header row naming the same fields, empty cells unset.

Fields (only `prompt` is required):
  prompt           text prompt (may be "" for unconditional generation)
  id               output name (default: the row index as 6 digits); letters, digits, `._-` only
  mode             one of MODES (default "t2v"); "extend" continues the clip `video` from its last frames
  seed             integer seed of this row (default: fold_in(PRNGKey(job seed), row index))
  image            condition image path (i2v, cinemagraph)
  video            condition / input video path (inpaint, sdedit, extend)
  mask             region image or video path: white = region to fill (inpaint) or animate (cinemagraph)
  box              region as "top,left,bottom,right" fractions of the frame in [0, 1] (alternative to mask)
  strength         SDEdit noise level t0 in (0, 1] (default: the job's)
  guidance_weight  classifier-free guidance weight of the base stage (default: the job's)
  num_steps        base sampler steps (default: the job's)
  sampler          "ddim", "ddpm" or "dpmpp_2m" (default: the job's)
  negative_prompt  prompt of guidance's unconditional branch (default: the job's; "" = the null text)
  guidance_rescale phi of guidance rescale in [0, 1] (default: the job's)
  guidance_interval guidance only at times "t_low,t_high" of the schedule (default: the job's)
  num_frames       base clip length; longer than the model runs windows fused by MultiDiffusion (default: model's)
  context_frames   extend: frames of `video` the new clip starts from (default: the job's)
Relative paths are resolved against the prompt file's folder; the file and its paths may be `gs://` URIs.
The row index counts the rows of the whole file (before `--shard_id/--num_shards` splitting), so a row's seed
and name do not depend on the split.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re

from lumiere_jax import storage
from lumiere_jax.diffusion.samplers import SAMPLERS

MODES: tuple[str, ...] = ("t2v", "i2v", "inpaint", "cinemagraph", "sdedit", "extend")
FIELDS: tuple[str, ...] = ("prompt", "id", "mode", "seed", "image", "video", "mask", "box", "strength",
                           "guidance_weight", "num_steps", "sampler", "negative_prompt", "guidance_rescale",
                           "guidance_interval", "num_frames", "context_frames")
# Condition files each mode needs (one of the pairs for the region).
_NEEDS = {"i2v": ("image",), "inpaint": ("video",), "cinemagraph": ("image",), "sdedit": ("video",),
          "extend": ("video",)}
_NEEDS_REGION = ("inpaint", "cinemagraph")
_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]+$")


class RowError(ValueError):
    """A row of the prompt file is malformed; the message names the file, line and field."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One requested video. `index` is the row's position in the whole file."""

    index: int
    prompt: str
    id: str
    mode: str = "t2v"
    seed: int | None = None
    image: str | None = None
    video: str | None = None
    mask: str | None = None
    box: tuple[float, float, float, float] | None = None
    strength: float | None = None
    guidance_weight: float | None = None
    num_steps: int | None = None
    sampler: str | None = None
    negative_prompt: str | None = None
    guidance_rescale: float | None = None
    guidance_interval: tuple[float, float] | None = None
    num_frames: int | None = None
    context_frames: int | None = None

    def to_json(self) -> dict:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


def read_rows(path: str) -> list[Row]:
    """Reads every row of a .txt, .jsonl or .csv prompt file and checks it (modes, fields, ids, paths)."""
    if not storage.isfile(path):
        raise FileNotFoundError(f"prompt file {path!r} does not exist")
    extension = os.path.splitext(path)[1].lower()
    folder = storage.parent(path)
    with io.StringIO(storage.read_bytes(path).decode("utf-8"), newline="") as file:
        if extension == ".txt":
            records = [(number, {"prompt": line.strip()}) for number, line in enumerate(file, 1) if line.strip()]
        elif extension == ".jsonl":
            records = [(number, _parse_json_line(path, number, line)) for number, line in enumerate(file, 1)
                       if line.strip()]
        elif extension == ".csv":
            records = [(reader.line_num, {key: value for key, value in record.items() if value not in ("", None)})
                       for reader in [csv.DictReader(file)] for record in reader]
        else:
            raise RowError(f"prompt file {path!r} has extension {extension!r}; use .txt, .jsonl or .csv")
    rows = [_make_row(index, record, f"{path}:{number}", folder) for index, (number, record) in enumerate(records)]
    duplicates = sorted({row.id for row in rows if sum(other.id == row.id for other in rows) > 1})
    if duplicates:
        raise RowError(f"{path}: row ids {duplicates[:5]} appear more than once; output names must be unique")
    if not rows:
        raise RowError(f"prompt file {path!r} holds no rows")
    return rows


def shard_rows(rows: list[Row], shard_id: int, num_shards: int) -> list[Row]:
    """Rows of job shard `shard_id` of `num_shards`: every num_shards-th row, starting at shard_id."""
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise ValueError(f"--shard_id={shard_id} must lie in [0, --num_shards={num_shards})")
    return [row for row in rows if row.index % num_shards == shard_id]


def _parse_json_line(path: str, number: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise RowError(f"{path}:{number}: not valid JSON ({error})") from None
    if not isinstance(record, dict):
        raise RowError(f"{path}:{number}: each line must be a JSON object like {{\"prompt\": \"...\"}}")
    return record


def _make_row(index: int, record: dict, where: str, folder: str) -> Row:
    unknown = sorted(set(record) - set(FIELDS))
    if unknown:
        raise RowError(f"{where}: unknown fields {unknown}; known fields are {list(FIELDS)}")
    if "prompt" not in record or not isinstance(record["prompt"], str):
        raise RowError(f"{where}: every row needs a string 'prompt' (may be empty)")
    values = dict(record)
    values["id"] = str(values.get("id", f"{index:06d}"))
    if not _ID_PATTERN.match(values["id"]):
        raise RowError(f"{where}: id {values['id']!r} may contain only letters, digits, '.', '_' and '-'")
    mode = values.setdefault("mode", "t2v")
    if mode not in MODES:
        raise RowError(f"{where}: unknown mode {mode!r}; choose one of {MODES}")
    for field, kind in (("seed", int), ("num_steps", int), ("strength", float), ("guidance_weight", float),
                        ("guidance_rescale", float), ("num_frames", int), ("context_frames", int)):
        if field in values:
            values[field] = _convert(values[field], kind, field, where)
    if "box" in values:
        values["box"] = _parse_box(values["box"], where)
    if "guidance_interval" in values:
        values["guidance_interval"] = _parse_interval(values["guidance_interval"], where)
    if values.get("sampler") is not None and values["sampler"] not in SAMPLERS:
        raise RowError(f"{where}: unknown sampler {values['sampler']!r}; choose one of {SAMPLERS}")
    if "negative_prompt" in values and not isinstance(values["negative_prompt"], str):
        raise RowError(f"{where}: negative_prompt must be a string")
    rescale = values.get("guidance_rescale")
    if rescale is not None and not 0.0 <= rescale <= 1.0:
        raise RowError(f"{where}: guidance_rescale={rescale} must lie in [0, 1] (Lin et al. suggest 0.7)")
    for field in ("num_frames", "context_frames"):
        if values.get(field) is not None and values[field] < 1:
            raise RowError(f"{where}: {field}={values[field]} must be at least 1")
    if "context_frames" in values and mode != "extend":
        raise RowError(f"{where}: context_frames applies to mode 'extend' only (this row's mode is {mode!r})")
    for field in ("image", "video", "mask"):
        if field in values:
            values[field] = storage.resolve(folder, str(values[field]))
    for field in _NEEDS.get(mode, ()):
        if field not in values:
            raise RowError(f"{where}: mode {mode!r} needs a '{field}' path")
    if mode in _NEEDS_REGION and ("mask" in values) == ("box" in values):
        raise RowError(f"{where}: mode {mode!r} needs exactly one of 'mask' (a region image/video) or 'box'")
    strength = values.get("strength")
    if strength is not None and not 0.0 < strength <= 1.0:
        raise RowError(f"{where}: strength={strength} must lie in (0, 1] (the SDEdit noise level t0)")
    if values.get("num_steps") is not None and values["num_steps"] < 1:
        raise RowError(f"{where}: num_steps={values['num_steps']} must be at least 1")
    return Row(index=index, **values)


def _convert(value, kind, field: str, where: str):
    try:
        converted = kind(value)
    except (TypeError, ValueError):
        raise RowError(f"{where}: {field}={value!r} is not a valid {kind.__name__}") from None
    if kind is int and isinstance(value, float) and value != converted:
        raise RowError(f"{where}: {field}={value!r} must be a whole number")
    return converted


def _parse_interval(value, where: str) -> tuple[float, float]:
    parts = value.split(",") if isinstance(value, str) else value
    try:
        low, high = (float(part) for part in parts)
    except (TypeError, ValueError):
        raise RowError(f"{where}: guidance_interval={value!r} must be two numbers t_low,t_high") from None
    if not 0.0 <= low < high <= 1.0:
        raise RowError(f"{where}: guidance_interval={value!r} must satisfy 0 <= t_low < t_high <= 1 (times of the "
                       "sampling schedule, 1 = pure noise; e.g. 0.2,0.8)")
    return low, high


def _parse_box(value, where: str) -> tuple[float, float, float, float]:
    parts = value.split(",") if isinstance(value, str) else value
    try:
        top, left, bottom, right = (float(part) for part in parts)
    except (TypeError, ValueError):
        raise RowError(f"{where}: box={value!r} must be four numbers top,left,bottom,right") from None
    if not (0.0 <= top < bottom <= 1.0 and 0.0 <= left < right <= 1.0):
        raise RowError(f"{where}: box={value!r} must satisfy 0 <= top < bottom <= 1 and 0 <= left < right <= 1 "
                       "(fractions of the frame height and width)")
    return top, left, bottom, right
