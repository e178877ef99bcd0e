"""The caption grammar of `synthetic_motion` as attribute combinations, and the scored text-to-video prompts.

A combination is what a video caption states: object colour, shape, background colour, motion and speed.
`scored_combinations()` draws the demo's scored prompts with a fixed seed (linear motions only, so "direction" is
scored); the first `NUM_HELD_OUT` of them are held out of the training split by the dataset builder
(synthetic_motion.py), so the score also measures generalisation to unseen combinations of seen words.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import numpy as np

from lumiere_jax.data import synthetic_render

LINEAR_MOTIONS: tuple[str, ...] = ("left", "right", "up", "down")
SCORED_SEED = 15
NUM_SCORED = 16
NUM_HELD_OUT = 8
VALIDATION_SEED = 101  # sampling settings are chosen on these prompts, never on the scored ones
NUM_VALIDATION = 24


@dataclasses.dataclass(frozen=True, order=True)
class Combination:
    """The attributes a video caption states (a still object's speed is drawn but never named)."""

    object_color: str
    shape: str
    background_color: str
    motion: str
    speed: str

    def caption(self, include_motion: bool = True) -> str:
        scene = synthetic_render.Scene(
            shape=self.shape, object_color=self.object_color, background_color=self.background_color,
            motion=self.motion, speed=self.speed, radius=1.0, positions=np.zeros((1, 2), np.float32))
        return synthetic_render.caption(scene, include_motion=include_motion)

    @classmethod
    def of_scene(cls, scene: synthetic_render.Scene) -> Combination:
        return cls(scene.object_color, scene.shape, scene.background_color, scene.motion, scene.speed)


def all_combinations() -> tuple[Combination, ...]:
    """Every combination `synthetic_render.sample_scene` can draw (object colour != background colour)."""
    return tuple(
        Combination(object_color, shape, background_color, motion, speed)
        for object_color, background_color in itertools.permutations(synthetic_render.COLOR_NAMES, 2)
        for shape, motion, speed in itertools.product(
            synthetic_render.SHAPES, synthetic_render.MOTIONS, synthetic_render.SPEEDS))


def all_captions() -> tuple[str, ...]:
    """Every distinct caption of the dataset (clips and stills), sorted: the corpus of the caption vocabulary."""
    captions = {combination.caption(include_motion) for combination in all_combinations()
                for include_motion in (True, False)}
    return tuple(sorted(captions))


def draw_linear_combinations(seed: int, count: int,
                              exclude: frozenset[Combination] = frozenset()) -> tuple[Combination, ...]:
    """`count` distinct combinations with a linear motion, none in `exclude`, drawn uniformly with `seed`."""
    rng = np.random.default_rng(seed)
    drawn: list[Combination] = []
    while len(drawn) < count:
        object_color, background_color = rng.choice(synthetic_render.COLOR_NAMES, size=2, replace=False)
        combination = Combination(
            str(object_color), str(rng.choice(synthetic_render.SHAPES)), str(background_color),
            str(rng.choice(LINEAR_MOTIONS)), str(rng.choice(synthetic_render.SPEEDS)))
        if combination not in drawn and combination not in exclude:
            drawn.append(combination)
    return tuple(drawn)


@functools.lru_cache(maxsize=1)
def scored_combinations() -> tuple[Combination, ...]:
    """The demo's `NUM_SCORED` scored combinations (linear motions), drawn with `SCORED_SEED`."""
    return draw_linear_combinations(SCORED_SEED, NUM_SCORED)


def validation_combinations(count: int = NUM_VALIDATION) -> tuple[Combination, ...]:
    """Combinations apart from the scored ones (`VALIDATION_SEED`), to choose sampling settings on.

    They may or may not appear in the training split; choosing on them keeps the scored prompts an unbiased test.
    """
    return draw_linear_combinations(VALIDATION_SEED, count, exclude=frozenset(scored_combinations()))


def held_out_combinations() -> frozenset[Combination]:
    """The scored combinations the training split never shows (the first `NUM_HELD_OUT` drawn)."""
    return frozenset(scored_combinations()[:NUM_HELD_OUT])


def is_held_out(scene: synthetic_render.Scene) -> bool:
    return Combination.of_scene(scene) in held_out_combinations()


def render_window(combination: Combination, num_frames: int, height: int, width: int, window: int,
                  rng: np.random.Generator) -> np.ndarray:
    """A ground-truth clip of `combination` as training shows it: rendered as a dataset clip of `num_frames`
    (the speeds are relative to it) with a drawn start, cut to a random window of `window` frames (the model's
    length; stages/adapter.py cuts the same). Returns uint8 `[window, height, width, 3]`."""
    if not 1 <= window <= num_frames:
        raise ValueError(f"window={window} must lie in [1, num_frames={num_frames}]")
    positions = synthetic_render.trajectory(combination.motion, combination.speed, num_frames, height, width, rng)
    scene = synthetic_render.Scene(
        shape=combination.shape, object_color=combination.object_color,
        background_color=combination.background_color, motion=combination.motion, speed=combination.speed,
        radius=synthetic_render.object_radius(height, width), positions=positions)
    start = int(rng.integers(0, num_frames - window + 1))
    return synthetic_render.render(scene, height, width)[start:start + window]
