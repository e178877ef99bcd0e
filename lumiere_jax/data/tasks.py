"""seqio tasks and mixtures: one task per dataset and resolution.

Tasks (after `register_synthetic_motion_tasks(data_dir)`):
  synthetic_motion_tiny, _small, _base                    video 16x32x32, 32x64x64, 80x128x128
  synthetic_motion_base_64                                video 80x64x64 (random crop + resize of base)
  synthetic_motion_image_tiny, synthetic_motion_image_base   images 32x32, 128x128 ("image" feature)
  synthetic_motion_image_tiny_as_video, ..._image_base_as_video  images as still clips (mixture members)
Mixtures: synthetic_motion_tiny_joint, synthetic_motion_base_joint  (videos + still images, joint training).
Also `register_video_folder_task(...)` for your own data and `register_ucf101_task(...)` for evaluation
(registered only when UCF101 is already prepared in data_dir; nothing is ever downloaded).

Joint image-video training feeds images to the video model as still clips (our choice: STUNet
down-samples time, so single frames cannot pass through it; still clips teach appearance from
image data without adding a second input format). Registration is idempotent: a name that exists is
replaced, so calling again with another data_dir or vocabulary takes effect.
Every task reads with `read_only=True`: a missing dataset is an error, never a download.
Each pixel task's recipe (source, pixel spec, vocabulary, caption steps) is kept, so `text_cache.py` can
rebuild it over cached frozen-T5 embeddings as `<task>_cached_text`.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import gin
import jax
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from lumiere_jax.data import preprocessors
from lumiere_jax.data import synthetic_motion  # registers the tfds builder; renders its configs
from lumiere_jax.data import video_folder  # noqa: F401  (registers the tfds builder)
from lumiere_jax.data import vocab as vocab_lib
from lumiere_jax.parallel import multihost

DEFAULT_SHUFFLE_BUFFER = 64  # examples, decoded float32: 64 base clips = 1 GB


@dataclasses.dataclass(frozen=True)
class PixelSpec:
    """Where pixels come from and what the task emits."""

    key: str                 # "video" or "image" in the tfds example
    height: int
    width: int
    num_frames: int = 1      # output frames for video (and for images turned into still clips)
    frame_stride: int = 1
    resize: bool = False     # random crop + resize from the stored resolution
    min_crop_scale: float = 1.0
    as_video: bool = False   # image -> still clip of num_frames


def output_features(vocabulary: seqio.Vocabulary, modality: str) -> dict[str, seqio.Feature]:
    pixel_rank = 4 if modality == "video" else 3
    return {
        modality: seqio.Feature(
            seqio.PassThroughVocabulary(size=0), add_eos=False, dtype=tf.float32, rank=pixel_rank),
        "text_tokens": seqio.Feature(vocabulary, add_eos=True, dtype=tf.int32),
    }


def pixel_preprocessors(spec: PixelSpec) -> list:
    """Frame sampling, crop / resize and normalisation to [-1, 1] for one pixel spec."""
    steps = []
    if spec.key == "video":
        steps.append(functools.partial(
            preprocessors.sample_frames, num_frames=spec.num_frames, frame_stride=spec.frame_stride))
    if spec.resize:
        steps.append(functools.partial(
            preprocessors.random_crop_resize, key=spec.key, height=spec.height, width=spec.width,
            min_scale=spec.min_crop_scale))
    steps.append(functools.partial(preprocessors.normalize_pixels, key=spec.key))
    if spec.key == "image" and spec.as_video:
        steps.append(functools.partial(preprocessors.image_to_still_video, num_frames=spec.num_frames))
    return steps


def replace_task(name: str, **kwargs) -> seqio.Task:
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    return seqio.TaskRegistry.add(name, **kwargs)


def replace_mixture(name: str, tasks, default_rate=None) -> seqio.Mixture:
    if name in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.remove(name)
    return seqio.MixtureRegistry.add(name, tasks, default_rate=default_rate)


@dataclasses.dataclass(frozen=True)
class PixelTaskRecipe:
    """How `register_pixel_task` built a task: enough to rebuild it over other stored examples."""

    source: seqio.DataSource
    spec: PixelSpec
    vocabulary: seqio.Vocabulary
    caption_preprocessors: tuple
    caption_key: str
    shuffle_buffer_size: int

    @property
    def modality(self) -> str:
        return "video" if self.spec.key == "video" or self.spec.as_video else "image"


_RECIPES: dict[str, PixelTaskRecipe] = {}


def pixel_task_recipe(name: str) -> PixelTaskRecipe:
    """The recipe of a task registered with `register_pixel_task` (or the helpers below)."""
    if name not in _RECIPES or name not in seqio.TaskRegistry.names():
        raise ValueError(
            f"{name!r} is not a pixel task registered in this process; register it first (e.g. "
            "register_synthetic_motion_tasks(data_dir) or register_video_folder_task(...))")
    return _RECIPES[name]


def register_pixel_task(
    name: str,
    source: seqio.DataSource,
    spec: PixelSpec,
    vocabulary: seqio.Vocabulary,
    caption_preprocessors: tuple = (),
    caption_key: str = "caption",
    shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER,
) -> seqio.Task:
    """Registers (or replaces) a text-to-video / text-to-image task reading `source`."""
    recipe = PixelTaskRecipe(
        source, spec, vocabulary, tuple(caption_preprocessors), caption_key, shuffle_buffer_size)
    task = replace_task(
        name,
        source=source,
        preprocessors=[
            *caption_preprocessors,
            functools.partial(
                preprocessors.rename_features,
                mapping={spec.key: spec.key, caption_key: "text_tokens"}),
            *pixel_preprocessors(spec),
            preprocessors.tokenize_caption,
        ],
        output_features=output_features(vocabulary, recipe.modality),
        shuffle_buffer_size=shuffle_buffer_size,
    )
    _RECIPES[name] = recipe
    return task


def _tfds_source(tfds_name: str, data_dir: str | None) -> seqio.TfdsDataSource:
    return seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=data_dir, read_only=True)


def prepare_synthetic_motion(data_dir: str | None, configs: tuple[str, ...]) -> None:
    """Builds procedural synthetic_motion configs into `data_dir` when missing (rendered locally, never downloaded).

    On several hosts process 0 builds first and the others after it: a shared `data_dir` (a bucket, NFS) is then
    built once and found prepared, a per-host disk is built by each host (two builders racing on one folder fail).
    """
    if jax.process_index() == 0:
        synthetic_motion.prepare(data_dir, configs)
    if configs:
        multihost.barrier("lumiere_prepare_synthetic_motion")
    if jax.process_index() > 0:
        synthetic_motion.prepare(data_dir, configs)


def register_synthetic_motion_tasks(
    data_dir: str | None = None,
    vocabulary: seqio.Vocabulary | None = None,
    image_rate: float = 0.2,
    shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER,
) -> list[str]:
    """Registers the synthetic_motion tasks and joint mixtures; returns their names.

    `image_rate` is the share of still-image clips in the joint mixtures.
    """
    vocabulary = vocabulary or vocab_lib.get_vocabulary()
    tasks = {
        "synthetic_motion_tiny": ("tiny", PixelSpec("video", 32, 32, num_frames=16)),
        "synthetic_motion_small": ("small", PixelSpec("video", 64, 64, num_frames=32)),
        "synthetic_motion_base": ("base", PixelSpec("video", 128, 128, num_frames=80)),
        "synthetic_motion_base_64": (
            "base", PixelSpec("video", 64, 64, num_frames=80, resize=True, min_crop_scale=0.8)),
        "synthetic_motion_image_tiny": ("image_tiny", PixelSpec("image", 32, 32)),
        "synthetic_motion_image_base": ("image_base", PixelSpec("image", 128, 128)),
        "synthetic_motion_image_tiny_as_video": (
            "image_tiny", PixelSpec("image", 32, 32, num_frames=16, as_video=True)),
        "synthetic_motion_image_base_as_video": (
            "image_base", PixelSpec("image", 128, 128, num_frames=80, as_video=True)),
    }
    for name, (config, spec) in tasks.items():
        source = _tfds_source(f"synthetic_motion/{config}:{synthetic_motion.SyntheticMotion.VERSION}", data_dir)
        register_pixel_task(name, source, spec, vocabulary, shuffle_buffer_size=shuffle_buffer_size)
    mixtures = {}
    for size in ("tiny", "base"):
        mixtures[f"synthetic_motion_{size}_joint"] = [
            (f"synthetic_motion_{size}", 1.0 - image_rate),
            (f"synthetic_motion_image_{size}_as_video", image_rate)]
    for name, members in mixtures.items():
        replace_mixture(name, members)
    return [*tasks, *mixtures]


def register_video_folder_task(
    name: str,
    config_name: str,
    data_dir: str,
    vocabulary: seqio.Vocabulary | None = None,
    num_frames: int | None = None,
    frame_stride: int = 1,
) -> seqio.Task:
    """Task over a prepared `video_folder/<config_name>` in `data_dir` (build it with tfds first)."""
    builder = tfds.builder(f"video_folder/{config_name}", data_dir=data_dir)
    config = builder.builder_config
    spec = PixelSpec(
        "video", config.height, config.width, num_frames=num_frames or config.num_frames,
        frame_stride=frame_stride)
    source = _tfds_source(f"video_folder/{config_name}:1.0.0", data_dir)
    return register_pixel_task(name, source, spec, vocabulary or vocab_lib.get_vocabulary())


def ucf101_caption(class_name: str) -> str:
    """'ApplyEyeMakeup' -> 'apply eye makeup' (UCF101 class names are CamelCase)."""
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", class_name)
    return " ".join(word.lower() for word in words)


def _label_to_caption(dataset: tf.data.Dataset, captions: tuple[str, ...]) -> tf.data.Dataset:
    table = tf.constant(captions)
    return dataset.map(
        lambda example: {**example, "caption": tf.gather(table, example["label"])},
        num_parallel_calls=tf.data.AUTOTUNE)


def register_ucf101_task(
    data_dir: str | None = None,
    vocabulary: seqio.Vocabulary | None = None,
    num_frames: int = 16,
    resolution: int = 128,
    frame_stride: int = 1,
    tfds_config: str = "ucf101_1_256",
) -> str | None:
    """Registers `ucf101_<frames>x<resolution>` (captions = class names) if UCF101 is prepared.

    Returns the task name, or None (with a log line) when the data is absent: UCF101 needs a manual
    `tfds build ucf101` first; this function never downloads.
    """
    builder = tfds.builder(f"ucf101/{tfds_config}", data_dir=data_dir)
    if not builder.is_prepared():
        logging.info("UCF101 (%s) is not prepared in %s; skipping its task", tfds_config, builder.data_dir)
        return None
    captions = tuple(ucf101_caption(name) for name in builder.info.features["label"].names)
    spec = PixelSpec(
        "video", resolution, resolution, num_frames=num_frames, frame_stride=frame_stride,
        resize=True)
    name = f"ucf101_{num_frames}x{resolution}"
    register_pixel_task(
        name, _tfds_source(f"ucf101/{tfds_config}:{builder.version}", data_dir), spec,
        vocabulary or vocab_lib.get_vocabulary(),
        caption_preprocessors=(functools.partial(_label_to_caption, captions=captions),))
    return name


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SyntheticMotionConfig:
    """The embedded synthetic_motion tasks, registered before the pipeline (or the text cache) reads them.

    Attributes:
      data_dir: the tfds data directory (None: ~/tensorflow_datasets).
      prepare_configs: configs rendered into `data_dir` first if missing, e.g. ("tiny", "image_tiny").
      sentencepiece_model: vocabulary the captions are tokenised with; None: bytes, as ByT5.
    """

    data_dir: str | None = None
    prepare_configs: tuple[str, ...] = ()
    sentencepiece_model: str | None = None

    def register(self) -> None:
        prepare_synthetic_motion(self.data_dir, tuple(self.prepare_configs))
        register_synthetic_motion_tasks(self.data_dir, vocab_lib.get_vocabulary(self.sentencepiece_model))
