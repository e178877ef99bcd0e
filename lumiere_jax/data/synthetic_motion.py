"""`synthetic_motion`: a procedurally generated, captioned video (and image) dataset; no download.

Each example is one object moving over a flat background (see `synthetic_render`). The caption names
shape, colours, motion and speed, so text controls both appearance and motion; the attributes and the
per-frame object centre are stored beside the clip so generated videos can be scored later.
Generation is deterministic: example `i` of split `s` is drawn from `np.random.default_rng((seed, s, i))`.
The train split never shows the held-out combinations of the scored prompts (`synthetic_prompts`): a draw that
lands on one is redrawn from the same generator; validation keeps them.

Configs: `tiny` (16x32x32 @ 8 fps), `small` (32x64x64 @ 8 fps), `base` (80x128x128 @ 16 fps, the
paper's base resolution) and image configs `image_tiny` (32x32), `image_base` (128x128) for
text-to-image pretraining. Other sizes and example counts build with
`tfds.builder("synthetic_motion", config=SyntheticMotionConfig(name=..., ...))`; seqio tasks
(tasks.py) address the named configs above. Rendering ahead of a run:

    python -m lumiere_jax.data.synthetic_motion --data_dir DIR [--configs tiny,image_tiny]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np
import tensorflow_datasets as tfds

from lumiere_jax.data import synthetic_prompts
from lumiere_jax.data import synthetic_render

_SPLIT_INDEX = {"train": 0, "validation": 1}


@dataclasses.dataclass(eq=False)
class SyntheticMotionConfig(tfds.core.BuilderConfig):
    """Clip geometry and dataset size. `image=True` stores single frames instead of clips."""

    num_frames: int = 16
    height: int = 32
    width: int = 32
    fps: int = 8
    num_train: int = 512
    num_validation: int = 64
    image: bool = False
    seed: int = 0


BUILDER_CONFIGS = [
    SyntheticMotionConfig(name="tiny", description="16 frames of 32x32 at 8 fps"),
    SyntheticMotionConfig(
        name="small", description="32 frames of 64x64 at 8 fps (CPU demos)",
        num_frames=32, height=64, width=64, num_train=512, num_validation=64),
    SyntheticMotionConfig(
        name="base", description="80 frames of 128x128 at 16 fps (paper base resolution)",
        num_frames=80, height=128, width=128, fps=16, num_train=1000, num_validation=64),
    SyntheticMotionConfig(
        name="image_tiny", description="32x32 still images", num_frames=1, num_train=2048,
        num_validation=128, image=True),
    SyntheticMotionConfig(
        name="image_base", description="128x128 still images", num_frames=1, height=128,
        width=128, num_train=2048, num_validation=128, image=True),
]


def draw_scene(config: SyntheticMotionConfig, split: str, index: int,
               hold_out: bool = True) -> synthetic_render.Scene:
    """The scene of example `index` of `split`; with `hold_out` (version 1.1.0 on), train scenes are redrawn
    until not a held-out combination."""
    rng = np.random.default_rng((config.seed, _SPLIT_INDEX[split], index))
    num_frames = 1 if config.image else config.num_frames
    while True:
        scene = synthetic_render.sample_scene(rng, num_frames, config.height, config.width, still=config.image)
        if not hold_out or split != "train" or not synthetic_prompts.is_held_out(scene):
            return scene


def generate_example(config: SyntheticMotionConfig, split: str, index: int, hold_out: bool = True) -> dict:
    """Renders example `index` of `split` as a tfds feature dict (a pure function of its arguments)."""
    scene = draw_scene(config, split, index, hold_out)
    frames = synthetic_render.render(scene, config.height, config.width)
    example = {
        "caption": synthetic_render.caption(scene, include_motion=not config.image),
        "shape": scene.shape,
        "object_color": scene.object_color,
        "background_color": scene.background_color,
        "radius": np.float32(scene.radius),
    }
    if config.image:
        example.update(image=frames[0], position=scene.positions[0])
    else:
        example.update(
            video=frames, positions=scene.positions, motion=scene.motion, speed=scene.speed)
    return example


class SyntheticMotion(tfds.core.GeneratorBasedBuilder):
    """Captioned clips of simple shapes moving over flat backgrounds, with ground-truth attributes."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "First release.",
                     "1.1.0": "The train split leaves out the held-out combinations of the scored prompts."}
    BUILDER_CONFIGS = BUILDER_CONFIGS

    def _info(self) -> tfds.core.DatasetInfo:
        config: SyntheticMotionConfig = self.builder_config
        features = {
            "caption": tfds.features.Text(),
            "shape": tfds.features.ClassLabel(names=synthetic_render.SHAPES),
            "object_color": tfds.features.ClassLabel(names=synthetic_render.COLOR_NAMES),
            "background_color": tfds.features.ClassLabel(names=synthetic_render.COLOR_NAMES),
            "radius": tfds.features.Scalar(np.float32, doc="object circumradius in pixels"),
        }
        if config.image:
            features["image"] = tfds.features.Image(shape=(config.height, config.width, 3))
            features["position"] = tfds.features.Tensor(
                shape=(2,), dtype=np.float32, doc="object centroid (y, x) in pixels")
        else:
            shape = (config.num_frames, config.height, config.width, 3)
            features["video"] = tfds.features.Video(shape=shape, encoding_format="png")
            features["positions"] = tfds.features.Tensor(
                shape=(config.num_frames, 2), dtype=np.float32,
                doc="object centroid (y, x) in pixels, per frame")
            features["motion"] = tfds.features.ClassLabel(names=synthetic_render.MOTIONS)
            features["speed"] = tfds.features.ClassLabel(names=synthetic_render.SPEEDS)
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(features),
            metadata=tfds.core.MetadataDict(fps=config.fps),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Procedural: nothing to download.
        config: SyntheticMotionConfig = self.builder_config
        return {
            "train": self._generate_examples("train", config.num_train),
            "validation": self._generate_examples("validation", config.num_validation),
        }

    def _generate_examples(self, split: str, num_examples: int):
        # A subclass with VERSION 1.0.0 renders that version's files (tests/train/test_legacy_checkpoint.py).
        hold_out = self.version >= tfds.core.Version("1.1.0")
        for index in range(num_examples):
            yield index, generate_example(self.builder_config, split, index, hold_out)


def prepare(data_dir: str | None, configs: tuple[str, ...]) -> list[str]:
    """Renders the named configs into `data_dir` where missing (found prepared: left as they are); returns the
    folders they are in."""
    folders = []
    for name in configs:
        builder = tfds.builder(f"synthetic_motion/{name}", data_dir=data_dir)
        builder.download_and_prepare()
        folders.append(builder.data_dir)
    return folders


def main(argv: list[str] | None = None) -> int:
    """Renders the named configs into `--data_dir` (configs already there are kept as they are)."""
    parser = argparse.ArgumentParser(description="render synthetic_motion configs (no download)")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--configs", default="tiny,image_tiny", help="comma-separated config names")
    args = parser.parse_args(argv)
    names = [name for name in args.configs.split(",") if name]
    known = [config.name for config in BUILDER_CONFIGS]
    unknown = sorted(set(names) - set(known))
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {known}")
    for name, folder in zip(names, prepare(args.data_dir, tuple(names))):
        print(f"dataset ready: synthetic_motion/{name} in {folder}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
