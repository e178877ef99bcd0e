"""Inverts `synthetic_render.caption`: a synthetic_motion prompt -> the attributes it states.

The inverse table is built by enumerating every attribute combination through `caption()` itself, so it
stays exact if the caption wording changes, and a prompt that two scenes share (a still object has no
speed word) maps to the attributes they have in common.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import numpy as np

from lumiere_jax.data import synthetic_render


@dataclasses.dataclass(frozen=True)
class PromptAttributes:
    """What a prompt states; None where the prompt does not say (no motion phrase, or no speed word)."""

    object_color: str
    shape: str
    background_color: str
    motion: str | None
    speed: str | None


def _normalise(prompt: str) -> str:
    return " ".join(prompt.lower().strip().rstrip(".").split())


@functools.lru_cache(maxsize=1)
def _inverse_table() -> dict[str, PromptAttributes]:
    options: dict[str, set[tuple]] = {}
    no_positions = np.zeros((1, 2), np.float32)
    for object_color, background_color, shape in itertools.product(
            synthetic_render.COLOR_NAMES, synthetic_render.COLOR_NAMES, synthetic_render.SHAPES):
        for motion, speed in itertools.product(synthetic_render.MOTIONS, synthetic_render.SPEEDS):
            scene = synthetic_render.Scene(
                shape=shape, object_color=object_color, background_color=background_color,
                motion=motion, speed=speed, radius=1.0, positions=no_positions)
            for include_motion in (True, False):
                text = _normalise(synthetic_render.caption(scene, include_motion=include_motion))
                attributes = (object_color, shape, background_color,
                              motion if include_motion else None, speed if include_motion else None)
                options.setdefault(text, set()).add(attributes)
    table = {}
    for text, candidates in options.items():
        # Keep each field all candidates agree on; e.g. "standing still" fits both speeds.
        fields = [values.pop() if len(values) == 1 else None
                  for values in map(set, zip(*candidates))]
        table[text] = PromptAttributes(*fields)
    return table


def parse_prompt(prompt: str) -> PromptAttributes:
    """Attributes of a synthetic_motion caption (case, extra spaces and a final period are ignored)."""
    attributes = _inverse_table().get(_normalise(prompt))
    if attributes is None:
        raise ValueError(
            f"prompt {prompt!r} is not a synthetic_motion caption; it must read like "
            "'a red circle moving slowly to the left on a blue background' with colours "
            f"{synthetic_render.COLOR_NAMES}, shapes {synthetic_render.SHAPES} and motions "
            f"{synthetic_render.MOTIONS} (see data/synthetic_render.caption)")
    return attributes
