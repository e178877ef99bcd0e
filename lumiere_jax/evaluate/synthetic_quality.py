"""Scores generated synthetic_motion clips against their prompts with the dataset's rendering rules.

Per clip: the background is the palette colour of the frame borders; in every frame the object is the
largest 4-connected blob of pixels closer to the object's colour than to the background's; its colour
is the nearest palette colour, its shape the `shape_mask` template with the best IoU, and the centroid
track gives the motion. Attribute accuracies are 0/1 per clip (majority vote over frames); temporal
consistency measures detection, colour identity and size stability across frames.

CLI: `python -m lumiere_jax.evaluate.synthetic_quality --videos_dir DIR` reads `DIR/*.mp4` with their
`{"prompt": ...}` sidecars `DIR/*.json` and prints the scores as JSON.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import json
import pathlib
import sys
from collections.abc import Sequence

import numpy as np

from lumiere_jax.data import synthetic_prompts
from lumiere_jax.data import synthetic_render
from lumiere_jax.data import video_io
from lumiere_jax.evaluate import caption_parser

_PALETTE_NAMES = synthetic_render.COLOR_NAMES
_PALETTE = np.array([synthetic_render.COLORS[name] for name in _PALETTE_NAMES], np.float32)  # [K, 3]


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
    """Thresholds of the analyser. RGB distances are Euclidean in [0, 255]^3."""

    # Farther than this from every palette colour, a colour has no name (palette pairs are >= 170 apart).
    palette_threshold: float = 100.0
    # A pixel this far from the background colour is a candidate object pixel (~half the closest pair).
    foreground_threshold: float = 85.0
    # Fraction of border pixels within foreground_threshold of their median; below it there is no flat
    # background (e.g. pure noise) and no object is searched for.
    min_background_coverage: float = 0.6
    # Smallest object, as a fraction of the frame area (the rendered triangle covers ~3%).
    min_object_fraction: float = 0.005
    # Track extent below this fraction of min(H, W) counts as standing still.
    still_fraction: float = 0.06
    # Track spread ratio (minor / major principal axis) above which the track is a loop, not a line.
    loop_ratio: float = 0.3
    # A track whose net displacement is at least this fraction of its extent is a linear motion.
    linear_net_fraction: float = 0.5


@dataclasses.dataclass(frozen=True)
class VideoAnalysis:
    """What the analyser sees in one clip; None where it cannot tell."""

    background_color: str | None
    background_coverage: float
    found: np.ndarray            # [T] bool, an object was segmented in the frame
    centroids: np.ndarray        # [T, 2] float (y, x) pixels, NaN where not found
    areas: np.ndarray            # [T] float pixels, 0 where not found
    frame_colors: tuple[str | None, ...]
    frame_shapes: tuple[str | None, ...]
    object_color: str | None     # majority over found frames
    shape: str | None            # majority over found frames
    motion: str | None
    speed: str | None


def to_rgb255(video: np.ndarray) -> np.ndarray:
    """uint8 [T, H, W, 3], or float [T, H, W, 3] in [-1, 1] -> float32 [T, H, W, 3] in [0, 255]."""
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be [T, H, W, 3], got shape {video.shape}; score one clip at a time")
    if video.dtype == np.uint8:
        return video.astype(np.float32)
    if not np.issubdtype(video.dtype, np.floating):
        raise ValueError(f"video must be uint8 or float in [-1, 1], got dtype {video.dtype}")
    return ((np.clip(video, -1.0, 1.0) + 1.0) * 127.5).astype(np.float32)


def nearest_color(rgb: np.ndarray, threshold: float) -> str | None:
    """Palette name nearest to `rgb: [3]`, or None when it is farther than `threshold`."""
    distances = np.linalg.norm(_PALETTE - rgb, axis=-1)
    index = int(np.argmin(distances))
    return _PALETTE_NAMES[index] if distances[index] <= threshold else None


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest 4-connected component of each image of `mask: [..., H, W]` bool (all False if empty)."""
    height, width = mask.shape[-2:]
    # Propagate the maximum pixel id through each component until nothing changes; ids are unique
    # across images, so one bincount gives every component's size.
    labels = np.where(mask, np.arange(1, mask.size + 1).reshape(mask.shape), 0)
    padded = np.zeros(mask.shape[:-2] + (height + 2, width + 2), labels.dtype)
    while True:
        padded[..., 1:-1, 1:-1] = labels
        neighbours = np.maximum.reduce([labels, padded[..., :-2, 1:-1], padded[..., 2:, 1:-1],
                                        padded[..., 1:-1, :-2], padded[..., 1:-1, 2:]])
        updated = np.where(mask, neighbours, 0)
        if np.array_equal(updated, labels):
            break
        labels = updated
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    sizes = counts[labels]  # [..., H, W] size of each pixel's component
    largest = sizes.max(axis=(-2, -1), keepdims=True)
    winner = np.where(sizes == largest, labels, 0).max(axis=(-2, -1), keepdims=True)
    return mask & (labels == winner)


@functools.lru_cache(maxsize=None)
def _unit_area(shape: str) -> float:
    """Area of `shape` with circumradius 1, measured on a fine raster of `shape_mask`."""
    radius, size = 200.0, 512
    center = np.array([size / 2, size / 2])
    return float(synthetic_render.shape_mask(shape, center, radius, size, size).sum()) / radius**2


def classify_shape(mask: np.ndarray) -> str:
    """Shape whose template (same centroid, same area, radius +-10%) best overlaps `mask: [H, W]` (IoU)."""
    height, width = mask.shape
    rows, cols = np.nonzero(mask)
    center = np.array([rows.mean() + 0.5, cols.mean() + 0.5])
    area = float(mask.sum())
    best_shape, best_iou = synthetic_render.SHAPES[0], -1.0
    for shape in synthetic_render.SHAPES:
        radius = np.sqrt(area / _unit_area(shape))
        for scale in (0.9, 1.0, 1.1):
            template = synthetic_render.shape_mask(shape, center, scale * radius, height, width)
            iou = (mask & template).sum() / max((mask | template).sum(), 1)
            if iou > best_iou:
                best_shape, best_iou = shape, iou
    return best_shape


def _nearest_speed(value: float, nominal: dict[str, float]) -> str:
    return min(synthetic_render.SPEEDS, key=lambda speed: abs(nominal[speed] - value))


def classify_motion(
    centroids: np.ndarray, found: np.ndarray, height: int, width: int, config: AnalysisConfig,
) -> tuple[str | None, str | None]:
    """(motion, speed) of a centroid track `centroids: [T, 2]` (y, x), using frames where `found`.

    still: extent < still_fraction * min(H, W). A loop-like track (both principal axes spread) circles,
    clockwise when its unwrapped angle around the mean grows (y points down). A line-like track with a
    large net displacement moves linearly along its dominant axis; one that returns to its start while
    spreading vertically bounces. Speed: the nearest nominal LINEAR_TRAVEL / PERIODIC_CYCLES.
    """
    track = centroids[found]  # [N, 2]
    if len(track) < 3:
        return None, None
    extent = track.max(axis=0) - track.min(axis=0)  # [2]
    if extent.max() < config.still_fraction * min(height, width):
        return "still", None
    centred = track - track.mean(axis=0)
    minor, major = np.sqrt(np.maximum(np.linalg.eigvalsh(np.cov(centred.T)), 0.0))
    net = track[-1] - track[0]
    if minor > config.loop_ratio * major:
        steps = np.diff(np.arctan2(centred[:, 0], centred[:, 1]))
        turn = float(np.sum((steps + np.pi) % (2 * np.pi) - np.pi))
        motion = "clockwise" if turn > 0 else "counterclockwise"
        return motion, _nearest_speed(abs(turn) / (2 * np.pi), synthetic_render.PERIODIC_CYCLES)
    if np.linalg.norm(net) >= config.linear_net_fraction * extent.max():
        axis = int(np.argmax(np.abs(net)))
        motion = (("up", "down"), ("left", "right"))[axis][int(net[axis] > 0)]
        radius = synthetic_render.object_radius(height, width)
        free_range = (height, width)[axis] - 2 * radius
        return motion, _nearest_speed(abs(net[axis]) / free_range, synthetic_render.LINEAR_TRAVEL)
    if extent[0] > extent[1]:
        # Each bounce goes down and up its full height once.
        bounces = np.abs(np.diff(track[:, 0])).sum() / (2 * extent[0])
        return "bouncing", _nearest_speed(bounces, synthetic_render.PERIODIC_CYCLES)
    return None, None


def _majority(values: Sequence[str | None]) -> str | None:
    counts = collections.Counter(value for value in values if value is not None)
    return counts.most_common(1)[0][0] if counts else None


def segment_objects(
    frames: np.ndarray, background_rgb: np.ndarray, config: AnalysisConfig,
) -> tuple[np.ndarray, list[str | None]]:
    """frames: [T, H, W, 3] in [0, 255] -> (object masks [T, H, W] bool, palette name per frame or None)."""
    min_area = max(config.min_object_fraction * frames.shape[1] * frames.shape[2], 1)
    background_distance = np.linalg.norm(frames - background_rgb, axis=-1)  # [T, H, W]
    candidates = largest_component(background_distance > config.foreground_threshold)
    found = candidates.sum(axis=(1, 2)) >= min_area  # [T]
    object_rgb = np.zeros((len(frames), 3), np.float32)
    for index in np.flatnonzero(found):
        # Colour from the most saturated half of the blob, which excludes blurred edge pixels.
        distance, candidate = background_distance[index], candidates[index]
        core = candidate & (distance >= np.median(distance[candidate]))
        object_rgb[index] = np.median(frames[index][core], axis=0)
    # Second pass: the boundary halfway between the two colours, independent of how far apart they are.
    closer = np.linalg.norm(frames - object_rgb[:, None, None], axis=-1) < background_distance
    masks = largest_component(closer & found[:, None, None])
    masks[masks.sum(axis=(1, 2)) < min_area] = False
    colors = [nearest_color(rgb, config.palette_threshold) if mask.any() else None
              for rgb, mask in zip(object_rgb, masks)]
    return masks, colors


def analyse_video(video: np.ndarray, config: AnalysisConfig = AnalysisConfig()) -> VideoAnalysis:
    """Segments and tracks the object of `video: [T, H, W, 3]` (uint8, or float in [-1, 1])."""
    frames = to_rgb255(video)  # [T, H, W, 3]
    num_frames, height, width, _ = frames.shape
    border = np.concatenate([
        frames[:, 0], frames[:, -1], frames[:, 1:-1, 0], frames[:, 1:-1, -1]], axis=1).reshape(-1, 3)
    background_rgb = np.median(border, axis=0)
    coverage = float(np.mean(
        np.linalg.norm(border - background_rgb, axis=-1) <= config.foreground_threshold))
    masks = np.zeros((num_frames, height, width), bool)
    colors: list[str | None] = [None] * num_frames
    if coverage >= config.min_background_coverage:
        masks, colors = segment_objects(frames, background_rgb, config)
    found = masks.any(axis=(1, 2))  # [T]
    rows = np.arange(height)[:, None] + 0.5
    cols = np.arange(width)[None, :] + 0.5
    areas = masks.sum(axis=(1, 2)).astype(np.float64)  # [T]
    with np.errstate(invalid="ignore", divide="ignore"):
        centroids = np.stack([(masks * rows).sum(axis=(1, 2)) / areas,
                              (masks * cols).sum(axis=(1, 2)) / areas], axis=-1)  # [T, 2], NaN if empty
    shapes = [classify_shape(mask) if mask.any() else None for mask in masks]
    motion, speed = classify_motion(centroids, found, height, width, config)
    return VideoAnalysis(
        background_color=nearest_color(background_rgb, config.palette_threshold)
        if coverage >= config.min_background_coverage else None,
        background_coverage=coverage,
        found=found, centroids=centroids, areas=areas,
        frame_colors=tuple(colors), frame_shapes=tuple(shapes),
        object_color=_majority(colors), shape=_majority(shapes),
        motion=motion, speed=speed,
    )


def score_analysis(analysis: VideoAnalysis, expected: caption_parser.PromptAttributes) -> dict:
    """Per-clip scores in [0, 1]; None where the prompt does not state the attribute.

    object_color / background_color / shape / motion: 1 if the analysed attribute equals the prompt's.
    color: mean of the two colour scores. speed: scored only when the motion is right.
    detection_rate: fraction of frames with an object. identity_consistency: fraction of those frames whose
    object colour is the clip's majority colour. size_stability: max(0, 1 - std / mean) of the object area.
    temporal_consistency: mean of these three.
    """
    def matches(predicted, target):
        return None if target is None else float(predicted == target)

    object_color = matches(analysis.object_color, expected.object_color)
    background_color = matches(analysis.background_color, expected.background_color)
    scores = {
        "object_color": object_color,
        "background_color": background_color,
        "color": (object_color + background_color) / 2,
        "shape": matches(analysis.shape, expected.shape),
        "motion": matches(analysis.motion, expected.motion),
        "speed": matches(analysis.speed, expected.speed) if analysis.motion == expected.motion else None,
    }
    found_colors = [color for color, found in zip(analysis.frame_colors, analysis.found) if found]
    areas = analysis.areas[analysis.found]
    scores["detection_rate"] = float(analysis.found.mean())
    scores["identity_consistency"] = (
        float(np.mean([color is not None and color == analysis.object_color for color in found_colors]))
        if found_colors else 0.0)
    scores["size_stability"] = float(max(0.0, 1.0 - areas.std() / areas.mean())) if len(areas) else 0.0
    scores["temporal_consistency"] = float(np.mean(
        [scores["detection_rate"], scores["identity_consistency"], scores["size_stability"]]))
    return scores


def score_videos(
    videos: Sequence[np.ndarray], prompts: Sequence[str], config: AnalysisConfig = AnalysisConfig(),
) -> dict:
    """Scores clips against their synthetic_motion prompts.

    Returns {"num_videos", "metrics": mean of each metric over the clips where it applies (None if none),
    "chance": `chance_levels(prompts)`, "videos": per clip {"prompt", "expected", "predicted", "scores"}}.
    """
    if len(videos) != len(prompts):
        raise ValueError(f"got {len(videos)} videos but {len(prompts)} prompts; pass one prompt per video")
    details = []
    for video, prompt in zip(videos, prompts):
        expected = caption_parser.parse_prompt(prompt)
        analysis = analyse_video(video, config)
        details.append({
            "prompt": prompt,
            "expected": dataclasses.asdict(expected),
            "predicted": {
                "object_color": analysis.object_color, "shape": analysis.shape,
                "background_color": analysis.background_color, "motion": analysis.motion,
                "speed": analysis.speed, "frames_with_object": int(analysis.found.sum()),
                "background_coverage": analysis.background_coverage,
            },
            "scores": score_analysis(analysis, expected),
        })
    return {"num_videos": len(details), "metrics": mean_metrics(details), "chance": chance_levels(prompts),
            "videos": details}


def mean_metrics(details: Sequence[dict]) -> dict[str, float | None]:
    """Mean of each metric over the clips (`score_videos`' "videos") where it applies; None where it never does."""
    metrics = {}
    for name in details[0]["scores"] if details else {}:
        values = [detail["scores"][name] for detail in details if detail["scores"][name] is not None]
        metrics[name] = float(np.mean(values)) if values else None
    return metrics


def chance_levels(prompts: Sequence[str]) -> dict[str, float]:
    """Expected score of a generator that ignores the text and draws clips as the training split does.

    For each attribute metric: the mean over the prompts that state the attribute of the probability that a
    training clip has the prompt's value, under the builder's draw (`synthetic_render.sample_scene`: uniform over
    the combinations, object colour != background colour, held-out combinations redrawn). Speed is scored only
    when the motion is right, so its chance is conditional on the motion. "color" averages the two colours.
    """
    allowed = [combination for combination in synthetic_prompts.all_combinations()
               if combination not in synthetic_prompts.held_out_combinations()]

    def probability(**attributes) -> float:
        matching = [c for c in allowed if all(getattr(c, name) == value for name, value in attributes.items())]
        return len(matching) / len(allowed)

    per_metric: dict[str, list[float]] = collections.defaultdict(list)
    for prompt in prompts:
        expected = caption_parser.parse_prompt(prompt)
        for name in ("object_color", "shape", "background_color", "motion"):
            if getattr(expected, name) is not None:
                per_metric[name].append(probability(**{name: getattr(expected, name)}))
        if expected.motion is not None and expected.speed is not None:
            per_metric["speed"].append(probability(motion=expected.motion, speed=expected.speed)
                                       / probability(motion=expected.motion))
    chance = {name: float(np.mean(values)) for name, values in per_metric.items()}
    if "object_color" in chance:
        chance["color"] = (chance["object_color"] + chance["background_color"]) / 2
    return chance


def read_videos_dir(videos_dir: str | pathlib.Path) -> tuple[list[str], list[np.ndarray], list[str]]:
    """(names, frames uint8 [T, H, W, 3] each, prompts) of `DIR/name.mp4` + `DIR/name.json` pairs."""
    paths = sorted(pathlib.Path(videos_dir).glob("*.mp4"))
    if not paths:
        raise FileNotFoundError(f"no .mp4 files in {videos_dir}")
    names, videos, prompts = [], [], []
    for path in paths:
        sidecar = path.with_suffix(".json")
        if not sidecar.exists():
            raise FileNotFoundError(f"{path} has no sidecar {sidecar}; write {{\"prompt\": ...}} there")
        frames, _ = video_io.read_video(path)
        names.append(path.stem)
        videos.append(frames)
        prompts.append(json.loads(sidecar.read_text())["prompt"])
    return names, videos, prompts


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos_dir", required=True, help="folder of name.mp4 + name.json {prompt}")
    args = parser.parse_args(argv)
    names, videos, prompts = read_videos_dir(args.videos_dir)
    result = score_videos(videos, prompts)
    for name, detail in zip(names, result["videos"]):
        detail["name"] = name
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
