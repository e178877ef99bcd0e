"""VBench (v1) benchmark layout: prompt-list converter and the file names VBench's evaluator reads.

    python -m lumiere_jax.sample.vbench --input VBench_full_info.json --output vbench.jsonl [--dimension scene]
    python -m lumiere_jax.sample --gin_file=... --gin.PROMPTS=vbench.jsonl --gin.OutputConfig.layout=vbench
    vbench evaluate --videos_path OUTPUT_DIR/videos --dimension scene

What VBench expects (github.com/Vchitect/VBench):
  - Names: `{prompt}-{index}.mp4`, index 0..4, the prompt verbatim (prompts/README.md, "Name the videos in the
    form of $prompt-$index.mp4"). The evaluator (`VBench.build_full_info_json`, vbench/__init__.py) looks up
    exactly `{prompt_en}-{i}{suffix}` for i in range(5) in `videos_path`, `prompt_en` taken unchanged from
    VBench_full_info.json: no escaping, no truncation, no rule that maps characters a file name cannot hold.
    Missing names only print a warning and are left out of the score.
  - `suffix` is the extension of the first name `os.listdir(videos_path)` returns, so that folder must hold the
    videos and nothing else (here `OUTPUT_DIR/videos/`; sidecars and `prompts.txt` stay in OUTPUT_DIR).
  - Samples: 5 per prompt; for the temporal_flickering prompts later revisions of prompts/README.md ask for 25
    "to ensure sufficient coverage after applying the static filter", and the maintainers suggest more than five,
    e.g. 40 (issue #94). `static_filter.py` reads every `*.mp4` of a flickering prompt and keeps the first 5 static
    ones as `{prompt}-{0..4}.mp4` (mp4 is needed there; the evaluator itself reads mp4, gif and png).
  - Seeds: a different random seed per video, not cherry-picked, reproducible, best recorded (prompts/README.md).
  - Prompts are stripped (`prompt.strip()` in the README's sampling code); some list lines end in a space.
  - Prompt lists: `prompts/prompts_per_dimension/*.txt`, `prompts/all_dimension.txt`, one prompt per line, and
    vbench/VBench_full_info.json: `[{"prompt_en": ..., "dimension": [...], "auxiliary_info": ...}]` (946 prompts).
    "A fantasy landscape" and "a fantasy landscape" both occur (issue #58): on a case-insensitive file system
    (macOS, Windows) their files collide, as they did in VBench's own sampling; on Linux and gs:// both are kept.
  - Frame rate: not prescribed. The README's sampling code writes fps=8; the models on the leaderboard use 6-30 fps
    (sampled_videos/README.md), and the frame-rate sensitive dimensions correct for it (issue #12). The leaderboard
    scores clips shorter than 5.0 s with VBench and longer ones with VBench-Long (README, "Evaluation Criterion"),
    which reads the same names; our 80 frames at the job's `fps` = 16 (paper) last exactly 5.0 s.

Our choices:
  - Sample number of a row = how many rows with the same prompt come before it in the whole prompt file. It works
    for any prompt file, and does not depend on sharding (rows.py's row index counts the whole file). The converter
    writes each prompt's rows in sample order, so the number also ends its id.
  - id `vb-<first 10 hex digits of sha256(prompt)>-<sample>`: stable, unique, only `[A-Za-z0-9._-]`.
  - seed: 31 bits of sha256(base seed, sample, prompt): the same prompt and sample get the same video whichever list
    or dimension filter the row came from; the seed is in the row and in its sidecar.
  - Prompts that cannot be a file name on the target are refused, not renamed (VBench would not find a renamed
    file): a `/`, NUL or line break, empty or space-padded prompts, and names over 255 UTF-8 bytes (NAME_MAX of
    ext4, XFS and most local file systems VBench runs on).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Sequence

from lumiere_jax import storage
from lumiere_jax.sample import rows as rows_lib

VIDEOS_FOLDER = "videos"
PROMPT_LIST = "prompts.txt"
SAMPLES_PER_PROMPT = 5
TEMPORAL_FLICKERING = "temporal_flickering"
TEMPORAL_FLICKERING_SAMPLES = 25  # prompts/README.md: more samples, for the static filter to pick 5 from
MAX_NAME_BYTES = 255


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One prompt of a VBench list and the dimensions it tests (empty for the plain .txt lists)."""

    text: str
    dimensions: tuple[str, ...] = ()


def video_name(prompt: str, sample: int) -> str:
    return f"{prompt}-{sample}.mp4"


def name_problem(prompt: str, sample: int) -> str | None:
    """Why `{prompt}-{sample}.mp4` cannot be a file name VBench finds, or None."""
    if not prompt:
        return "is empty"
    if prompt != prompt.strip():
        return "starts or ends with white space (VBench strips its prompts, so it would never find the file)"
    for character, what in (("/", "'/'"), ("\0", "a NUL byte"), ("\n", "a line break"), ("\r", "a line break")):
        if character in prompt:
            return f"contains {what}, which a file name cannot hold"
    size = len(video_name(prompt, sample).encode("utf-8"))
    if size > MAX_NAME_BYTES:
        return f"makes a {size}-byte file name; file systems allow {MAX_NAME_BYTES}"
    return None


def video_paths(rows: Sequence[rows_lib.Row], where: str) -> dict[int, str]:
    """Row index -> `videos/{prompt}-{sample}.mp4`, the sample counting earlier rows of the same prompt.

    `rows`: every row of the prompt file `where` (not one shard's). Raises ValueError naming the rows whose
    prompt cannot be a file name.
    """
    counts: dict[str, int] = {}
    paths, problems = {}, []
    for row in rows:
        sample = counts[row.prompt] = counts.get(row.prompt, -1) + 1
        problem = name_problem(row.prompt, sample)
        if problem:
            problems.append(f"row {row.index} (id {row.id!r}): prompt {row.prompt[:80]!r} {problem}")
        paths[row.index] = f"{VIDEOS_FOLDER}/{video_name(row.prompt, sample)}"
    if problems:
        raise ValueError(f"{where}: layout='vbench' names each video by its prompt ({{prompt}}-{{index}}.mp4, as "
                         f"VBench looks it up, with no rule to rename it), but {len(problems)} rows cannot be "
                         f"named: {problems[:5]}. Fix those prompts in the prompt file, or sample with "
                         "layout='default'")
    return paths


def prompt_list(rows: Sequence[rows_lib.Row]) -> str:
    """The prompts, once each, in file order, one a line (the form of VBench's own .txt lists)."""
    return "".join(f"{prompt}\n" for prompt in dict.fromkeys(row.prompt for row in rows))


def read_prompts(path: str) -> list[Prompt]:
    """A VBench prompt list: a .txt file (one prompt a line) or VBench_full_info.json (`prompt_en`, `dimension`).

    Prompts are stripped, as VBench's sampling code does; a prompt listed twice is kept once, at its first place,
    with the dimensions of both.
    """
    text = storage.read_bytes(path).decode("utf-8")
    extension = os.path.splitext(path)[1].lower()
    if extension == ".txt":
        found = [Prompt(line.strip()) for line in text.splitlines() if line.strip()]
    elif extension == ".json":
        found = [_json_prompt(entry, f"{path}[{number}]") for number, entry in enumerate(_json_list(text, path))]
    else:
        raise ValueError(f"VBench prompt list {path!r} has extension {extension!r}; give a .txt list (one prompt a "
                         "line, e.g. prompts/all_dimension.txt) or VBench_full_info.json")
    merged: dict[str, tuple[str, ...]] = {}
    for prompt in found:
        dimensions = merged.get(prompt.text, ())
        merged[prompt.text] = dimensions + tuple(name for name in prompt.dimensions if name not in dimensions)
    return [Prompt(text, dimensions) for text, dimensions in merged.items()]


def _json_list(text: str, path: str) -> list:
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of {{\"prompt_en\": ..., \"dimension\": [...]}} objects "
                         "(the form of VBench_full_info.json)")
    return entries


def _json_prompt(entry, where: str) -> Prompt:
    if not isinstance(entry, dict) or not isinstance(entry.get("prompt_en"), str):
        raise ValueError(f"{where}: each entry needs a string 'prompt_en' (the form of VBench_full_info.json)")
    dimensions = entry.get("dimension", [])
    if not isinstance(dimensions, list) or not all(isinstance(name, str) for name in dimensions):
        raise ValueError(f"{where}: 'dimension' must be a list of dimension names, got {dimensions!r}")
    return Prompt(entry["prompt_en"].strip(), tuple(dimensions))


def row_id(prompt: str, sample: int) -> str:
    return f"vb-{hashlib.sha256(prompt.encode('utf-8')).hexdigest()[:10]}-{sample}"


def row_seed(prompt: str, sample: int, base_seed: int) -> int:
    digest = hashlib.sha256(f"{base_seed}\n{sample}\n{prompt}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 2**31


def prompt_rows(prompts: Sequence[Prompt], samples_per_prompt: int = SAMPLES_PER_PROMPT,
                temporal_flickering_samples: int = TEMPORAL_FLICKERING_SAMPLES,
                dimensions: Sequence[str] = (), base_seed: int = 0) -> list[dict]:
    """Rows of our prompt file (rows.py fields `prompt`, `id`, `seed`): each prompt's samples 0, 1, ... in order.

    `dimensions`: keep only prompts that test one of them (needs the .json list). Prompts that test
    temporal_flickering (among the kept dimensions) get `max(samples_per_prompt, temporal_flickering_samples)`.
    """
    if samples_per_prompt < 1 or temporal_flickering_samples < 1:
        raise ValueError(f"samples_per_prompt={samples_per_prompt} and temporal_flickering_samples="
                         f"{temporal_flickering_samples} must be at least 1")
    if dimensions:
        if not any(prompt.dimensions for prompt in prompts):
            raise ValueError(f"--dimension {list(dimensions)} needs the VBench_full_info.json list (a .txt list "
                             "names no dimensions); or convert prompts/prompts_per_dimension/<dimension>.txt")
        present = sorted({name for prompt in prompts for name in prompt.dimensions})
        unknown = sorted(set(dimensions) - set(present))
        if unknown:
            raise ValueError(f"dimensions {unknown} are not in the prompt list; it has {present}")
    rows, problems, ids = [], [], {}
    for prompt in prompts:
        tested = [name for name in prompt.dimensions if not dimensions or name in dimensions]
        if dimensions and not tested:
            continue
        count = max(samples_per_prompt, temporal_flickering_samples) if TEMPORAL_FLICKERING in tested \
            else samples_per_prompt
        problem = name_problem(prompt.text, count - 1)
        if problem:
            problems.append(f"{prompt.text[:80]!r} {problem}")
            continue
        identity = row_id(prompt.text, 0)
        if ids.setdefault(identity, prompt.text) != prompt.text:
            raise ValueError(f"prompts {ids[identity]!r} and {prompt.text!r} share the id hash {identity}; "
                             "rename one of them")
        rows += [{"prompt": prompt.text, "id": row_id(prompt.text, sample),
                  "seed": row_seed(prompt.text, sample, base_seed)} for sample in range(count)]
    if problems:
        raise ValueError(f"{len(problems)} prompts cannot be VBench file names ({{prompt}}-{{index}}.mp4): "
                         f"{problems[:5]}; VBench has no rule to rename them, so fix or drop them in the list")
    if not rows:
        raise ValueError("the prompt list holds no prompts to convert")
    return rows


def convert(input_path: str, output_path: str, samples_per_prompt: int = SAMPLES_PER_PROMPT,
            temporal_flickering_samples: int = TEMPORAL_FLICKERING_SAMPLES, dimensions: Sequence[str] = (),
            base_seed: int = 0) -> list[dict]:
    """Reads a VBench prompt list, writes our .jsonl prompt file (rows.py); returns its rows."""
    if os.path.splitext(output_path)[1].lower() != ".jsonl":
        raise ValueError(f"--output {output_path!r} must end in .jsonl (the prompt file keeps each row's id and seed)")
    rows = prompt_rows(read_prompts(input_path), samples_per_prompt, temporal_flickering_samples, dimensions,
                       base_seed)
    storage.write_text_atomic(output_path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lumiere_jax.sample.vbench",
        description="Convert a VBench prompt list (.txt or VBench_full_info.json) into a sampling prompt file "
                    "(.jsonl: one row per prompt and sample, with a stable id and seed).")
    parser.add_argument("--input", required=True, help="VBench .txt prompt list or VBench_full_info.json")
    parser.add_argument("--output", required=True, help="the .jsonl prompt file to write (local or gs://)")
    parser.add_argument("--samples_per_prompt", type=int, default=SAMPLES_PER_PROMPT)
    parser.add_argument("--temporal_flickering_samples", type=int, default=TEMPORAL_FLICKERING_SAMPLES,
                        help="samples of temporal_flickering prompts (.json list), for VBench's static filter")
    parser.add_argument("--dimension", action="append", default=[],
                        help="keep only prompts of this dimension (repeatable; .json list only)")
    parser.add_argument("--seed", type=int, default=0, help="base seed the rows' seeds are drawn from")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        rows = convert(args.input, args.output, args.samples_per_prompt, args.temporal_flickering_samples,
                       args.dimension, args.seed)
    except (ValueError, FileNotFoundError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(rows)} rows ({len({row['prompt'] for row in rows})} prompts) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
