"""Prompt sets of the evaluation job (gin-selectable): synthetic_motion captions or a text file."""

from __future__ import annotations

import gin
import numpy as np

from lumiere_jax import storage
from lumiere_jax.data import synthetic_render


@gin.configurable
def synthetic_prompts(num_prompts: int = 32, seed: int = 0) -> list[str]:
    """Captions of `num_prompts` random synthetic_motion scenes (the embedded default data's distribution)."""
    rng = np.random.default_rng(seed)
    # Any frame size works: captions do not depend on it.
    return [synthetic_render.caption(synthetic_render.sample_scene(rng, 2, 32, 32)) for _ in range(num_prompts)]


@gin.configurable
def file_prompts(path: str = gin.REQUIRED) -> list[str]:
    """One prompt per non-empty line of a local or `gs://` file (e.g. the paper's 109-prompt set, which the user
    provides)."""
    prompts = [line.strip() for line in storage.read_bytes(path).decode("utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{path} has no prompts; write one per line")
    return prompts
