"""Pure-NumPy renderer and attribute vocabulary of the `synthetic_motion` dataset.

A scene is one object (shape, colour, size) moving over a flat background. Everything the caption
says is stored as attributes, and the object's per-frame centre is stored too, so a quality analyser
can score generated clips with the same rules (`COLORS`, `shape_mask`, `trajectory`, `caption`).

Coordinates are continuous pixel units, `(y, x)`, with pixel `(i, j)` covering `[i, i+1) x [j, j+1)`
(its centre is `(i + 0.5, j + 0.5)`). A position is the centroid of the drawn shape.

Motion speeds are defined relative to the clip (our choice): a linear motion crosses `LINEAR_TRAVEL`
of the free range during the clip, a periodic motion completes `PERIODIC_CYCLES` cycles, so the
captions keep their meaning at any frame count or fps.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Well-separated colours (pairwise RGB distance >= 170), names as they appear in captions.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 30),
    "blue": (30, 50, 230),
    "yellow": (240, 230, 40),
    "magenta": (230, 40, 220),
    "cyan": (40, 220, 230),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
MOTIONS: tuple[str, ...] = (
    "left", "right", "up", "down",            # linear
    "bouncing", "clockwise", "counterclockwise",  # periodic
    "still",
)
SPEEDS: tuple[str, ...] = ("slow", "fast")

# Linear motion: fraction of the free range crossed during the clip.
LINEAR_TRAVEL: dict[str, float] = {"slow": 0.4, "fast": 0.9}
# Periodic motion: full cycles per clip.
PERIODIC_CYCLES: dict[str, float] = {"slow": 1.0, "fast": 2.0}
# Object circumradius as a fraction of min(height, width).
OBJECT_RADIUS_FRACTION = 0.15

_LINEAR_DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (0.0, -1.0), "right": (0.0, 1.0), "up": (-1.0, 0.0), "down": (1.0, 0.0)}
_MOTION_PHRASES: dict[str, str] = {
    "left": "moving {speed} to the left",
    "right": "moving {speed} to the right",
    "up": "moving {speed} up",
    "down": "moving {speed} down",
    "bouncing": "bouncing {speed} up and down",
    "clockwise": "circling {speed} clockwise",
    "counterclockwise": "circling {speed} counterclockwise",
    "still": "standing still",
}
_SPEED_WORDS: dict[str, str] = {"slow": "slowly", "fast": "quickly"}


@dataclasses.dataclass(frozen=True)
class Scene:
    """Ground truth of one clip: attributes plus the object's centre in every frame."""

    shape: str
    object_color: str
    background_color: str
    motion: str
    speed: str
    radius: float          # circumradius in pixels
    positions: np.ndarray  # [T, 2] float32 (y, x) pixel coordinates of the centroid


def object_radius(height: int, width: int) -> float:
    return OBJECT_RADIUS_FRACTION * min(height, width)


def trajectory(
    motion: str, speed: str, num_frames: int, height: int, width: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Samples start point / phase for `motion` and returns positions: [T, 2] float32 (y, x).

    The object stays fully inside the frame for every motion.
    """
    radius = object_radius(height, width)
    low = np.array([radius, radius])
    high = np.array([height - radius, width - radius])
    span = high - low
    progress = np.arange(num_frames) / max(num_frames - 1, 1)  # [T] in [0, 1]
    if motion in _LINEAR_DIRECTIONS:
        direction = np.array(_LINEAR_DIRECTIONS[motion])
        travel = LINEAR_TRAVEL[speed] * span * np.abs(direction)
        # Start where the whole path fits, then walk along `direction`.
        start_low = low + np.where(direction < 0, travel, 0.0)
        start_high = high - np.where(direction > 0, travel, 0.0)
        start = rng.uniform(start_low, start_high)
        positions = start + progress[:, None] * travel * direction
    elif motion == "bouncing":
        x = rng.uniform(low[1], high[1])
        phase = rng.uniform(0.0, np.pi)
        lift = np.abs(np.sin(np.pi * PERIODIC_CYCLES[speed] * progress + phase))
        y = high[0] - 0.9 * span[0] * lift  # floor at the bottom, apex near the top
        positions = np.stack([y, np.full_like(y, x)], axis=-1)
    elif motion in ("clockwise", "counterclockwise"):
        orbit = 0.5 * min(span) * rng.uniform(0.6, 0.9)
        centre = rng.uniform(low + orbit, high - orbit)
        phase = rng.uniform(0.0, 2 * np.pi)
        # y points down, so an increasing angle turns clockwise on screen.
        sign = 1.0 if motion == "clockwise" else -1.0
        angle = phase + sign * 2 * np.pi * PERIODIC_CYCLES[speed] * progress
        positions = centre + orbit * np.stack([np.sin(angle), np.cos(angle)], axis=-1)
    elif motion == "still":
        positions = np.repeat(rng.uniform(low, high)[None], num_frames, axis=0)
    else:
        raise ValueError(f"unknown motion {motion!r}; choose one of {MOTIONS}")
    return positions.astype(np.float32)


def shape_mask(shape: str, center: np.ndarray, radius: float, height: int, width: int) -> np.ndarray:
    """Boolean mask [H, W] of pixels whose centres lie inside `shape` centred (centroid) at `center`."""
    ys = np.arange(height)[:, None] + 0.5 - center[0]
    xs = np.arange(width)[None, :] + 0.5 - center[1]
    if shape == "circle":
        return ys**2 + xs**2 <= radius**2
    if shape == "square":
        half = radius / np.sqrt(2.0)  # the square inscribed in the circumcircle
        return (np.abs(ys) <= half) & (np.abs(xs) <= half)
    if shape == "diamond":
        return np.abs(ys) + np.abs(xs) <= radius
    if shape == "triangle":
        # Upward equilateral triangle with circumcentre (= centroid) at the centre.
        bottom = ys <= radius / 2.0
        slope = np.sqrt(3.0)
        right_edge = slope * xs - ys <= radius
        left_edge = -slope * xs - ys <= radius
        return bottom & left_edge & right_edge
    raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def render(scene: Scene, height: int, width: int) -> np.ndarray:
    """Draws the scene: frames uint8 [T, H, W, 3]."""
    num_frames = scene.positions.shape[0]
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    frames[:] = np.array(COLORS[scene.background_color], np.uint8)
    object_rgb = np.array(COLORS[scene.object_color], np.uint8)
    for index, center in enumerate(scene.positions):
        frames[index][shape_mask(scene.shape, center, scene.radius, height, width)] = object_rgb
    return frames


def caption(scene: Scene, include_motion: bool = True) -> str:
    """e.g. "a red circle moving slowly to the left on a blue background"."""
    subject = f"a {scene.object_color} {scene.shape}"
    if include_motion:
        phrase = _MOTION_PHRASES[scene.motion].format(speed=_SPEED_WORDS[scene.speed])
        subject = f"{subject} {phrase}"
    return f"{subject} on a {scene.background_color} background"


def sample_scene(
    rng: np.random.Generator, num_frames: int, height: int, width: int, still: bool = False,
) -> Scene:
    """Draws attributes uniformly (object colour != background colour) and a trajectory."""
    object_color, background_color = rng.choice(COLOR_NAMES, size=2, replace=False)
    motion = "still" if still else str(rng.choice(MOTIONS))
    speed = str(rng.choice(SPEEDS))
    return Scene(
        shape=str(rng.choice(SHAPES)),
        object_color=str(object_color),
        background_color=str(background_color),
        motion=motion,
        speed=speed,
        radius=object_radius(height, width),
        positions=trajectory(motion, speed, num_frames, height, width, rng),
    )
