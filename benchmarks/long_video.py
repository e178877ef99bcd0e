"""Long clips from the trained tiny base: temporal consistency across MultiDiffusion window seams against
consistency inside windows (synthetic-domain analysis of evaluate/synthetic_quality.py).

A base clip longer than the model runs as windows of the model's length fused at every step
(`SamplingConfig.num_frames`, `base_window_stride`; sample/base.py base_denoiser). This samples the same synthetic
prompts through the sampling CLI (the demo's flags, base only) as clips of the model's length (1x), of 4x its
length with the default stride (half a window), and of 4x with stride = window (no overlap), at stride 6 of 8
(seams off the model's blocks), and with triangular window weights, then compares frame pairs that cross a
window seam with pairs inside windows.

Consistency of a frame pair (f, f+1), from `synthetic_quality.analyse_video`'s per-frame analysis:
  consistent  both frames show an object, of the same palette colour, with areas within SIZE_RATIO of each
              other (the analyser's shape templates allow the radius +-10%: areas 0.81-1.21 of nominal, so two
              frames of one object may differ by 1.21 / 0.81 ~ 1.5);
  + motion    and the centroid step is no jump: at most max(JUMP_PIXELS, JUMP_FACTOR x the clip's median step).
A pair is a seam pair when the windows covering frame f are not those covering f + 1 (a window starts or ends
between them: with stride 4 every fourth pair, with stride 8 the pairs between windows); otherwise it is inside.
Scores are fractions of consistent pairs, pooled over the clips. Criterion (issue): seam consistency within
0.1 of inside consistency.

Control for the model's own structure: the tiny STUNet halves time twice, so it works in blocks of 4 frames
and changes most between them, also in a 1x clip. Seams of windows starting at multiples of 4 (strides 4 and 8)
fall on such block edges, so seams are also compared with the inside pairs at block edges (f mod 4 = 3), and
with the mean absolute pixel change of the pair (`frame_change`, pixels in [0, 1]), which needs no detection.

    python -m benchmarks.long_video                     # the demo's base at /tmp/demo_run/full/runs/stunet
    python -m benchmarks.long_video --prompts 16 --variants 4x --out_dir /tmp/long_video
    python -m benchmarks.long_video --skip_sampling                # analyse the clips sampled before
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import subprocess
import time

import numpy as np

from lumiere_jax import demo
from lumiere_jax.data import synthetic_render
from lumiere_jax.diffusion import multidiffusion
from lumiere_jax.evaluate import synthetic_quality
from lumiere_jax.models import config as config_lib

SIZE_RATIO = (1.1 / 0.9) ** 2
JUMP_PIXELS = 2.0
JUMP_FACTOR = 2.0
CRITERION = 0.1


@dataclasses.dataclass(frozen=True)
class Variant:
    """A clip length as a multiple of the model's, and the window stride (None: the job's default, half)."""

    name: str
    length_factor: int
    stride_factor: float | None = None  # of the model's length
    weights: str = "uniform"  # SamplingConfig.base_window_weights


VARIANTS = {variant.name: variant for variant in (
    Variant("1x", 1), Variant("4x", 4), Variant("4x_no_overlap", 4, stride_factor=1.0),
    Variant("4x_triangular", 4, weights="triangular"),
    # Stride 6 of 8: windows start off the model's 4-frame blocks, so seams and block edges separate.
    Variant("4x_stride6", 4, stride_factor=0.75), Variant("4x_stride6_triangular", 4, 0.75, "triangular"))}


def synthetic_rows(count: int, num_frames: int, seed: int = 0) -> list[dict]:
    """Rows of `count` synthetic_motion captions (random scenes, the dataset's grammar), one seed each."""
    rng = np.random.default_rng(seed)
    return [{"id": f"clip{index:02d}", "seed": index, "num_frames": num_frames,
             "prompt": synthetic_render.caption(synthetic_render.sample_scene(rng, 2, 32, 32))}
            for index in range(count)]


def window_stride(model_frames: int, variant: Variant) -> int:
    return int(variant.stride_factor * model_frames) if variant.stride_factor else max(model_frames // 2, 1)


def seam_pairs(num_frames: int, model_frames: int, stride: int) -> np.ndarray:
    """`[T - 1]` bool: pair (f, f+1) has a different set of covering windows on either side."""
    if num_frames == model_frames:
        return np.zeros(num_frames - 1, bool)
    starts = multidiffusion.window_starts(num_frames, model_frames, stride)
    cover = [frozenset(i for i, start in enumerate(starts) if start <= frame < start + model_frames)
             for frame in range(num_frames)]
    return np.array([cover[frame] != cover[frame + 1] for frame in range(num_frames - 1)])


def pair_consistency(analysis: synthetic_quality.VideoAnalysis) -> tuple[np.ndarray, np.ndarray]:
    """(consistent, consistent with motion): `[T - 1]` bool each, for the pairs (f, f+1); see the module doc."""
    found = analysis.found
    colors = analysis.frame_colors
    areas = analysis.areas
    both = found[:-1] & found[1:]
    same_color = np.array([a is not None and a == b for a, b in itertools.pairwise(colors)])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(areas[:-1], areas[1:]) / np.minimum(areas[:-1], areas[1:])
    consistent = both & same_color & (ratio <= SIZE_RATIO)
    steps = np.linalg.norm(np.diff(analysis.centroids, axis=0), axis=-1)  # [T - 1], NaN where not found
    typical = np.median(steps[consistent]) if consistent.any() else 0.0
    no_jump = np.nan_to_num(steps, nan=np.inf) <= max(JUMP_PIXELS, JUMP_FACTOR * typical)
    return consistent, consistent & no_jump


def sample_variant(variant: Variant, run_dir: str, out_dir: str, num_prompts: int, model_frames: int,
                   batch_size: int) -> float:
    """Samples the variant's clips with the sampling CLI (skips finished rows); returns the job's wall time."""
    output_dir = os.path.join(out_dir, variant.name)
    os.makedirs(output_dir, exist_ok=True)
    prompts = os.path.join(out_dir, f"{variant.name}.jsonl")
    with open(prompts, "w") as file:
        file.writelines(json.dumps(row) + "\n"
                        for row in synthetic_rows(num_prompts, variant.length_factor * model_frames))
    # The demo's base-only sampling stage (no SSR checkpoint is read with use_ssr=False).
    command = demo.sample_command(prompts, output_dir, "stunet", run_dir, "unused", demo.FULL, use_ssr=False)
    command += ["--gin.OutputConfig.write_gif=False", f"--gin.sample_videos.batch_size={batch_size}",
                f"--gin.SamplingConfig.base_window_stride={window_stride(model_frames, variant)}",
                f"--gin.SamplingConfig.base_window_weights='{variant.weights}'"]
    start = time.perf_counter()
    completed = subprocess.run(command, check=False, capture_output=True, text=True)
    if completed.returncode:
        raise RuntimeError(f"sampling {variant.name} failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    return time.perf_counter() - start


PAIR_CLASSES = ("seam", "inside", "inside_block_edge")
METRICS = ("consistent", "motion", "frame_change")


def pair_classes(num_frames: int, model_frames: int, stride: int, block: int) -> dict[str, np.ndarray]:
    """Masks `[T - 1]` of the seam pairs, the inside pairs, and the inside pairs that cross one of the model's
    own coarsest temporal blocks (`block` frames: f mod block = block - 1), where it changes the most itself."""
    seams = seam_pairs(num_frames, model_frames, stride)
    block_edge = np.arange(num_frames - 1) % block == block - 1
    return {"seam": seams, "inside": ~seams, "inside_block_edge": ~seams & block_edge}


def analyse_variant(variant: Variant, out_dir: str, num_prompts: int, model_frames: int, block: int) -> dict:
    """Per pair class: fraction of consistent pairs (also with motion) and mean frame change, pooled over clips."""
    rows = synthetic_rows(num_prompts, variant.length_factor * model_frames)
    stride = window_stride(model_frames, variant)
    pooled = {metric: {name: [] for name in PAIR_CLASSES} for metric in METRICS}
    videos, gaps = [], []
    for row in rows:
        video = np.load(os.path.join(out_dir, variant.name, f"{row['id']}.npy"))  # uint8 [T, H, W, 3]
        videos.append(video)
        classes = pair_classes(len(video), model_frames, stride, block)
        consistent, with_motion = pair_consistency(synthetic_quality.analyse_video(video))
        # Mean absolute change of a pair's pixels, in [0, 1].
        change = np.abs(np.diff(video.astype(np.float32) / 255.0, axis=0)).mean(axis=(1, 2, 3))
        for metric, values in (("consistent", consistent), ("motion", with_motion), ("frame_change", change)):
            for name, mask in classes.items():
                pooled[metric][name] += values[mask].tolist()
        if classes["seam"].any():
            gaps.append(consistent[classes["inside"]].mean() - consistent[classes["seam"]].mean())
    scores = synthetic_quality.score_videos(videos, [row["prompt"] for row in rows])["metrics"]
    result = {"variant": variant.name, "frames": variant.length_factor * model_frames, "stride": stride,
              "clips": len(rows), "pairs": {name: len(pooled["consistent"][name]) for name in PAIR_CLASSES},
              "quality": scores}
    for metric, split in pooled.items():
        result[metric] = {name: float(np.mean(values)) if values else None for name, values in split.items()}
    if gaps:
        result["per_clip_gap"] = float(np.mean(gaps))
        result["per_clip_gap_stderr"] = float(np.std(gaps, ddof=1) / np.sqrt(len(gaps)))
    return result


def _shown(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def report(results: list[dict]) -> str:
    lines = [("| clip | frames | stride | pairs: seam / inside / inside at block edge | consistent: seam | inside | "
              "inside at block edge | gap inside - seam (per clip +- s.e.) | with motion: seam | inside | "
              "frame change: seam | inside | inside at block edge |"), "|---" * 13 + "|"]
    for r in results:
        consistent, motion, change = r["consistent"], r["motion"], r["frame_change"]
        gap = (f"{r['per_clip_gap']:.3f} +- {r['per_clip_gap_stderr']:.3f}" if "per_clip_gap" in r else "n/a")
        lines.append(
            f"| {r['variant']} | {r['frames']} | {r['stride']} | "
            f"{' / '.join(str(r['pairs'][name]) for name in PAIR_CLASSES)} | "
            + " | ".join(_shown(consistent[name]) for name in PAIR_CLASSES) + f" | {gap} | "
            f"{_shown(motion['seam'])} | {_shown(motion['inside'])} | "
            + " | ".join(_shown(change[name]) for name in PAIR_CLASSES) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", default="/tmp/demo_run/full/runs/stunet", help="the demo's trained tiny base")
    parser.add_argument("--out_dir", default="/tmp/long_video", help="prompt files and sampled clips")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--model_frames", type=int, default=demo.FULL.frames, help="the base model's clip length")
    parser.add_argument("--json", default=None)
    parser.add_argument("--skip_sampling", action="store_true", help="analyse the clips already in --out_dir")
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(args.run_dir, "checkpoints")):
        parser.error(f"{args.run_dir} has no checkpoints/; run the demo (python -m lumiere_jax.demo) first")
    block = 2 ** config_lib.stunet_config("tiny").temporal_downsamples  # the demo's base is the tiny preset
    results = []
    for name in args.variants.split(","):
        variant = VARIANTS[name]
        seconds = None if args.skip_sampling else sample_variant(variant, args.run_dir, args.out_dir, args.prompts,
                                                                 args.model_frames, args.batch_size)
        result = analyse_variant(variant, args.out_dir, args.prompts, args.model_frames, block)
        result["sampling_seconds"] = seconds
        print(json.dumps(result), flush=True)
        results.append(result)
    print(report(results))
    for r in results:
        seam, inside = r["consistent"]["seam"], r["consistent"]["inside"]
        if seam is not None:
            verdict = "pass" if abs(inside - seam) <= CRITERION else "fail"
            print(f"{r['variant']}: consistency at seams {seam:.3f} vs inside windows {inside:.3f}, |gap| "
                  f"{abs(inside - seam):.3f} -> {verdict} (criterion {CRITERION})")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
