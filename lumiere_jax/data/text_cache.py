"""Frozen-T5 text embeddings cached beside the examples, so training does not run T5 every step.

Imagen-style pipelines encode each caption once. `build_split` reads a pixel task's split in order, encodes
the captions' tokens with the frozen encoder in fixed-size jitted batches and writes, per split:

  <cache_dir>/<task>/<split>/<task>.tfrecord-00000-of-00004 ...   tf.Examples:
      "frames"          the task's pixels as stored, uint8 frames as PNG (an image is one frame)
      "caption"         the caption text; "text_tokens" its ids (+ EOS, truncated to text_length)
      "num_tokens"      the token count; "text_embeddings" float16 bytes of [num_tokens, D] (real tokens only)
  <cache_dir>/<task>/<split>/manifest.json   written last, so its presence marks a complete split

Shards are written under temporary names and renamed (in a local folder uploaded afterwards when the cache is
on `gs://`), then the manifest last: a split without its manifest is partial, never read; a rerun skips
complete splits and rebuilds partial ones. A `gs://` cache is read by training from a local mirror of each
split, downloaded once per host and manifest (`_readable_split_dir`): tf.data keeps reading local TFRecord
files with the checkpointable iterators the data snapshots need.

Embeddings are stored as float16: half the bytes of float32 with 8x bfloat16's precision (10 mantissa bits), and
T5 outputs come out of a final RMS norm, so their magnitude (at most sqrt(D) times the norm's scale) stays far
inside float16's range; an overflow is an error, never a silent inf.

`register_cached_text(name, cache_dir, expected, split)` registers `<task>_cached_text` (and `<mixture>_cached_text`
for mixtures) over the cache with the task's pixel preprocessors, after checking each manifest against the
encoder and text length the reader uses. Batches then carry `text_embeddings: float32 [B, L, D]` (zero at
padding) beside tokens and mask, and `train.step.encode_text` uses them instead of running T5.

Command line (gin flags as every entry point, lumiere_jax/gin_cli.py; gin_configs/data/text_cache.gin):
    python -m lumiere_jax.data.text_cache --gin_file=runs/train_stunet.gin --gin_file=data/text_cache.gin \\
      --gin.TEXT_CACHE_DIR=/data/text_cache --gin.SyntheticMotionConfig.data_dir=/data/tfds
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import functools
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import gin
import jax
import numpy as np
import seqio
import tensorflow as tf

from lumiere_jax import gin_cli
from lumiere_jax import storage
from lumiere_jax.data import preprocessors
from lumiere_jax.data import tasks as tasks_lib
from lumiere_jax.models import t5
from lumiere_jax.stages import factory
from lumiere_jax.stages import text as text_lib

if __name__ == "__main__":
    # Run as `python -m`: hand over to the module imported under its own name, so that gin registers
    # `build_text_cache` once (gin files import lumiere_jax.data.text_cache).
    from lumiere_jax.data import text_cache as _imported

    sys.exit(_imported.main())

SUFFIX = "_cached_text"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
STORAGE_DTYPE = "float16"
_TEMP_PREFIX = "tmp."
# Fields that decide what the embeddings are; a reader or a rerun must agree on all of them.
_IDENTITY_FIELDS = ("text_encoder", "text_encoder_weights", "text_length", "embedding_dim", "dtype")


@dataclasses.dataclass(frozen=True)
class EncoderIdentity:
    """What cached embeddings depend on: encoder preset, its weights, and the token length L."""

    text_encoder: str             # t5.PRESETS name
    text_encoder_weights: str     # the Hugging Face directory, or "random init (train seed N)"
    text_length: int

    @classmethod
    def create(cls, text_encoder: str, text_length: int, t5_dir: str | None, train_seed: int) -> EncoderIdentity:
        """The identity of the encoder a run uses: `t5_dir` weights, or (None) the trainer's seeded random init."""
        weights = t5_dir.rstrip("/") if t5_dir else f"random init (train seed {train_seed})"
        return cls(text_encoder, weights, text_length)

    @property
    def embedding_dim(self) -> int:
        return t5.get_config(self.text_encoder).d_model

    def fields(self) -> dict[str, Any]:
        return {"text_encoder": self.text_encoder, "text_encoder_weights": self.text_encoder_weights,
                "text_length": self.text_length, "embedding_dim": self.embedding_dim, "dtype": STORAGE_DTYPE}


def cached_name(name: str) -> str:
    return name + SUFFIX


def split_dir(cache_dir: str, task_name: str, split: str) -> str:
    return storage.join(cache_dir, task_name, split)


def _shard_glob(task_name: str) -> str:
    return f"{task_name}.tfrecord-*-of-*"


def read_manifest(directory: str) -> dict | None:
    """The manifest of a complete split directory, or None when the split is absent or partial."""
    path = storage.join(directory, MANIFEST)
    return storage.read_json(path) if storage.exists(path) else None


def check_manifest(manifest: dict, expected: EncoderIdentity, directory: str) -> None:
    """Raises if the cache in `directory` was made by another encoder, weights or text length than `expected`."""
    wanted = expected.fields()
    differences = [f"{field}: cache has {manifest.get(field)!r}, this run uses {wanted[field]!r}"
                   for field in _IDENTITY_FIELDS if manifest.get(field) != wanted[field]]
    if differences:
        raise ValueError(
            f"text cache {directory} does not match this run's text encoder ({'; '.join(differences)}). Rebuild it "
            "with this run's gin files (python -m lumiere_jax.data.text_cache ... --gin_file=data/text_cache.gin) "
            "into another TEXT_CACHE_DIR, or drop data/text_cache.gin to encode text on the fly")


# --- building ------------------------------------------------------------------------------------------------


def load_text_encoder(
    text_encoder: str, t5_dir: str | None, t5_param_dtype: str | None, train_seed: int,
) -> tuple[t5.TextEncoder, t5.Params]:
    """The encoder and parameters the trainer uses (stages/text.py): Hugging Face weights from `t5_dir` (through
    `pretrained_text_encoder`, in `t5_param_dtype`; None: the dtype gin binds for the trainer,
    `pretrained_text_encoder.param_dtype`), or the random init `train.loop.train` draws for `train_seed`."""
    encoder = t5.TextEncoder(t5.get_config(text_encoder))
    dtype = {} if t5_param_dtype is None else {"param_dtype": t5_param_dtype}
    params_fn = factory.pretrained_text_encoder(t5_dir, **dtype) if t5_dir else None
    params = text_lib.frozen_text_encoder_params(encoder, params_fn, train_seed)
    return encoder, jax.device_put(params)  # on the device once, not on every encode call


def caption_examples(task_name: str, split: str, text_length: int) -> tf.data.Dataset:
    """A task's split in order, before its pixel preprocessing: uint8 `frames`, `caption`, `text_tokens`."""
    recipe = tasks_lib.pixel_task_recipe(task_name)
    dataset = recipe.source.get_dataset(split=split, shuffle=False)
    for preprocess in recipe.caption_preprocessors:
        dataset = preprocess(dataset)
    key, caption_key = recipe.spec.key, recipe.caption_key

    def select(example):
        pixels = example[key]
        if pixels.dtype != tf.uint8:
            raise ValueError(f"task {task_name!r} stores {key!r} as {pixels.dtype.name}; the cache keeps uint8 frames")
        frames = pixels if key == "video" else pixels[None]  # [T, H, W, 3]
        return {"frames": frames, "caption": example[caption_key], "text_tokens": example[caption_key]}

    dataset = dataset.map(select, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = preprocessors.tokenize_caption(
        dataset, {"text_tokens": seqio.Feature(recipe.vocabulary)}, {"text_tokens": text_length})

    def encode_png(example):
        png = tf.map_fn(tf.io.encode_png, example["frames"], fn_output_signature=tf.string)
        return {**example, "frames": png, "frame_shape": tf.shape(example["frames"])}

    return dataset.map(encode_png, num_parallel_calls=tf.data.AUTOTUNE)


def _bytes_feature(values: Sequence[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _int_feature(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value) for value in values]))


def serialize_example(example: dict, embeddings: np.ndarray) -> bytes:
    """One cache record; `embeddings: [num_tokens, D]` float16 (little-endian bytes)."""
    tokens = example["text_tokens"]
    features = {
        "frames": _bytes_feature(example["frames"]),
        "caption": _bytes_feature([example["caption"]]),
        "text_tokens": _int_feature(tokens),
        "num_tokens": _int_feature([len(tokens)]),
        "text_embeddings": _bytes_feature([embeddings.astype("<f2").tobytes()]),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _batches(examples: Iterator[dict], batch_size: int) -> Iterator[list[dict]]:
    batch = []
    for example in examples:
        batch.append(example)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def encode_batch(
    encoder: t5.TextEncoder, params: t5.Params, token_lists: Sequence[np.ndarray], batch_size: int,
    text_length: int,
) -> list[np.ndarray]:
    """float16 embeddings `[num_tokens, D]` per token list; the batch is padded to `batch_size` rows so the
    jitted encoder compiles once."""
    tokens = np.zeros((batch_size, text_length), np.int32)
    mask = np.zeros((batch_size, text_length), bool)
    for row, ids in enumerate(token_lists):
        tokens[row, :len(ids)] = ids
        mask[row, :len(ids)] = True
    embeddings = np.asarray(encoder.encode(params, tokens, mask), np.float32)  # [B, L, D]
    stored = embeddings.astype(np.float16)
    if not np.all(np.isfinite(stored[mask])):
        raise ValueError(f"text embeddings of magnitude {np.abs(embeddings[mask]).max():.3g} overflow float16; "
                         "check the encoder weights (T5 outputs are RMS-normalised and should be far smaller)")
    return [stored[row, :len(ids)] for row, ids in enumerate(token_lists)]


class _ShardWriter:
    """Deals records round-robin into `num_shards` temporary shards in a local folder; `commit` renames them to
    their final names."""

    def __init__(self, directory: str, task_name: str, num_shards: int):
        self.directory, self.task_name = directory, task_name
        self.temp_paths = [os.path.join(directory, f"{_TEMP_PREFIX}{task_name}.tfrecord-{index:05d}")
                           for index in range(num_shards)]
        self._writers = [tf.io.TFRecordWriter(path) for path in self.temp_paths]
        self.count = 0

    def write(self, record: bytes) -> None:
        self._writers[self.count % len(self._writers)].write(record)
        self.count += 1

    def commit(self) -> int:
        """Closes the shards and renames the non-empty ones to `<task>.tfrecord-<i>-of-<n>`; returns n."""
        for writer in self._writers:
            writer.close()
        written = self.temp_paths[:self.count]  # round-robin: shards past `count` stayed empty
        for path in self.temp_paths[self.count:]:
            os.remove(path)
        for index, path in enumerate(written):
            final = os.path.join(self.directory, f"{self.task_name}.tfrecord-{index:05d}-of-{len(written):05d}")
            os.replace(path, final)
        return len(written)


@contextlib.contextmanager
def _local_shard_folder(directory: str) -> Iterator[str]:
    """Where TensorFlow writes the shards of `directory`: the folder itself when local, else a local temporary
    folder whose files are uploaded to `directory` on a clean exit (tf.io.gfile's GCS client cannot be pointed
    at another endpoint, and one client for every object keeps tests and pods alike)."""
    if storage.is_uri(directory):
        with tempfile.TemporaryDirectory(prefix="lumiere_text_cache_") as folder:
            yield folder
            storage.copy_tree(folder, directory)
    else:
        storage.makedirs(directory)
        yield storage.normalize(directory)


def _merge_shapes(known: list[int | None] | None, shape: Sequence[int | None]) -> list[int | None]:
    """Per-dimension size shared by every example so far, None where examples differ."""
    shape = [None if size is None else int(size) for size in shape]
    return shape if known is None else [size if size == other else None for size, other in zip(known, shape)]


def _is_complete(directory: str, manifest: dict | None, task_name: str) -> bool:
    if manifest is None:
        return False
    shards = fnmatch.filter(storage.listdir(directory), _shard_glob(task_name))
    return len(shards) == manifest["num_shards"]


def build_split(
    task_name: str,
    split: str,
    cache_dir: str,
    encoder: t5.TextEncoder,
    params: t5.Params,
    identity: EncoderIdentity,
    batch_size: int = 64,
    num_shards: int = 64,
) -> dict:
    """Caches one split of a pixel task; returns its manifest. A complete cache with the same identity is left
    as it is; a partial one (no manifest) is rebuilt; one of another encoder is an error (never overwritten)."""
    if encoder.config.d_model != identity.embedding_dim:
        raise ValueError(f"encoder d_model={encoder.config.d_model} but preset {identity.text_encoder!r} has "
                         f"{identity.embedding_dim}; load the encoder of the same preset")
    directory = split_dir(cache_dir, task_name, split)
    manifest = read_manifest(directory)
    if manifest is not None:
        check_manifest(manifest, identity, directory)
        if _is_complete(directory, manifest, task_name):
            logging.info("text cache %s is complete (%d examples); nothing to do", directory, manifest["count"])
            return manifest
    if storage.exists(directory):
        logging.info("removing the partial text cache in %s", directory)
        storage.remove(directory)
    recipe = tasks_lib.pixel_task_recipe(task_name)
    frame_shape = None
    with _local_shard_folder(directory) as local_dir:
        writer = _ShardWriter(local_dir, task_name, num_shards)
        examples = caption_examples(task_name, split, identity.text_length).as_numpy_iterator()
        for batch in _batches(examples, batch_size):
            token_lists = [example["text_tokens"] for example in batch]
            embeddings = encode_batch(encoder, params, token_lists, batch_size, identity.text_length)
            for example, example_embeddings in zip(batch, embeddings):
                frame_shape = _merge_shapes(frame_shape, example["frame_shape"])
                writer.write(serialize_example(example, example_embeddings))
        if writer.count == 0:
            raise ValueError(f"split {split!r} of task {task_name!r} is empty; nothing to cache")
        num_shards = writer.commit()
    pixel_shape = frame_shape if recipe.spec.key == "video" else frame_shape[1:]
    manifest = {"format_version": FORMAT_VERSION, "source_task": task_name, "split": split, **identity.fields(),
                "count": writer.count, "num_shards": num_shards, "pixel_key": recipe.spec.key,
                "pixel_shape": pixel_shape}
    storage.write_json_atomic(storage.join(directory, MANIFEST), manifest)  # last: it commits the split
    logging.info("cached %d examples of %s/%s in %d shards under %s", writer.count, task_name, split, num_shards,
                 directory)
    return manifest


def member_tasks(name: str) -> list[str]:
    """The task itself, or the tasks of a mixture."""
    if name in seqio.MixtureRegistry.names():
        return [task.name for task in seqio.get_mixture_or_task(name).tasks]
    return [name]


@gin.configurable
def build_text_cache(
    output_dir: str = gin.REQUIRED,
    mixture_or_task_name: str = gin.REQUIRED,
    text_encoder: str = gin.REQUIRED,
    text_length: int = gin.REQUIRED,
    splits: Sequence[str] = ("train", "validation"),
    t5_dir: str | None = None,
    t5_param_dtype: str | None = None,
    train_seed: int = 0,
    batch_size: int = 64,
    num_shards: int = 64,
    synthetic_motion: tasks_lib.SyntheticMotionConfig | None = tasks_lib.SyntheticMotionConfig(),
) -> list[dict]:
    """Caches `splits` of a task (or of every task of a mixture) into `output_dir`; returns the manifests.

    The encoder is the trainer's: preset `text_encoder` with weights from `t5_dir` (loaded in `t5_param_dtype`;
    None: in the run files' `pretrained_text_encoder.param_dtype`, so the cache holds what the trainer would
    encode), or when None the random init of a run with `train.seed = train_seed`.
    `synthetic_motion` registers the embedded tasks first, as for `seqio_iterator` (the same gin bindings:
    `SyntheticMotionConfig.data_dir`, ...); None: the task is registered elsewhere.
    Each split is dealt round-robin into `num_shards` files (fewer if it has fewer examples): give at least
    one per host that reads it (seqio shards by file).
    """
    if synthetic_motion is not None:
        synthetic_motion.register()
    identity = EncoderIdentity.create(text_encoder, text_length, t5_dir, train_seed)
    encoder, params = load_text_encoder(text_encoder, t5_dir, t5_param_dtype, train_seed)
    return [build_split(task_name, split, output_dir, encoder, params, identity, batch_size, num_shards)
            for task_name in member_tasks(mixture_or_task_name) for split in splits]


# --- reading -------------------------------------------------------------------------------------------------


def _feature_description() -> dict[str, tf.io.FixedLenFeature | tf.io.FixedLenSequenceFeature]:
    return {
        "frames": tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True),
        "text_tokens": tf.io.FixedLenSequenceFeature([], tf.int64, allow_missing=True),
        "num_tokens": tf.io.FixedLenFeature([], tf.int64),
        "text_embeddings": tf.io.FixedLenFeature([], tf.string),
    }


def decode_cached(
    dataset: tf.data.Dataset, pixel_key: str, pixel_shape: Sequence[int | None], embedding_dim: int,
) -> tf.data.Dataset:
    """Parsed records -> `{pixel_key: uint8 pixels, "text_tokens": int32 [n], "text_embeddings": float32 [n, D]}`."""
    def decode(example):
        frames = tf.map_fn(lambda png: tf.io.decode_png(png, channels=3), example["frames"],
                           fn_output_signature=tf.uint8)  # [T, H, W, 3]
        pixels = frames if pixel_key == "video" else frames[0]
        tokens = tf.cast(example["text_tokens"], tf.int32)
        embeddings = tf.reshape(tf.io.decode_raw(example["text_embeddings"], tf.float16), [-1, embedding_dim])
        consistent = tf.debugging.assert_equal(
            tf.stack([tf.shape(tokens)[0], tf.shape(embeddings)[0]]),
            tf.fill([2], tf.cast(example["num_tokens"], tf.int32)),
            message="corrupt text cache record: token count, tokens and embedding rows disagree")
        with tf.control_dependencies([consistent]):
            embeddings = tf.cast(embeddings, tf.float32)
        return {pixel_key: tf.ensure_shape(pixels, pixel_shape), "text_tokens": tokens,
                "text_embeddings": embeddings}
    return dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)


def _readable_split_dir(directory: str, manifest: dict) -> str:
    """A folder tf.data can read the split's shards from: `directory` when local; for a `gs://` cache a local
    mirror downloaded once per host and manifest (storage.mirror_directory), since tf.io.gfile's GCS client
    cannot reach other endpoints (emulators) and a local copy keeps tf.data's iterator checkpoints working."""
    return storage.mirror_directory(directory, json.dumps(manifest, sort_keys=True))


def register_cached_text_task(task_name: str, cache_dir: str, expected: EncoderIdentity) -> seqio.Task:
    """Registers `<task>_cached_text` over every complete split cached for `task_name` (checked against
    `expected`), with the task's pixel preprocessors (frame sampling, crops, normalisation)."""
    recipe = tasks_lib.pixel_task_recipe(task_name)
    manifests = {}
    for split in storage.listdir(storage.join(cache_dir, task_name)):
        directory = split_dir(cache_dir, task_name, split)
        manifest = read_manifest(directory)
        if manifest is not None:
            check_manifest(manifest, expected, directory)
            manifests[manifest["split"]] = manifest
    if not manifests:
        raise ValueError(f"no complete text cache for task {task_name!r} under {cache_dir}; build it with "
                         "python -m lumiere_jax.data.text_cache (see gin_configs/data/text_cache.gin)")
    pixel_shape = functools.reduce(_merge_shapes, [m["pixel_shape"] for m in manifests.values()], None)
    shard_patterns = {split: os.path.join(_readable_split_dir(split_dir(cache_dir, task_name, split), manifest),
                                          _shard_glob(task_name))
                      for split, manifest in manifests.items()}
    source = seqio.TFExampleDataSource(
        shard_patterns, _feature_description(),
        num_input_examples={split: m["count"] for split, m in manifests.items()})
    features = tasks_lib.output_features(recipe.vocabulary, recipe.modality)
    features["text_embeddings"] = seqio.Feature(
        seqio.PassThroughVocabulary(size=0), add_eos=False, dtype=tf.float32, rank=2)
    decode = functools.partial(
        decode_cached, pixel_key=recipe.spec.key, pixel_shape=pixel_shape,
        embedding_dim=expected.embedding_dim)
    return tasks_lib.replace_task(
        cached_name(task_name), source=source,
        preprocessors=[decode, *tasks_lib.pixel_preprocessors(recipe.spec)],
        output_features=features, shuffle_buffer_size=recipe.shuffle_buffer_size)


def register_cached_text(name: str, cache_dir: str, expected: EncoderIdentity, split: str) -> str:
    """Registers the cached version of a task or mixture (members with their rates); returns its name.

    Raises if a member has no complete cache of `split`, or one made by another encoder than `expected`.
    """
    for task_name in member_tasks(name):
        task = register_cached_text_task(task_name, cache_dir, expected)
        if split not in task.source.splits:
            raise ValueError(
                f"the text cache of {task_name!r} under {cache_dir} has no complete {split!r} split (has "
                f"{sorted(task.source.splits)}); build it with python -m lumiere_jax.data.text_cache "
                f"--gin.build_text_cache.splits=\"('{split}',)\" ...")
    if name in seqio.MixtureRegistry.names():
        mixture = seqio.get_mixture_or_task(name)
        tasks_lib.replace_mixture(
            cached_name(name), [(cached_name(task.name), mixture.get_rate(task)) for task in mixture.tasks])
    return cached_name(name)


# --- command line --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m lumiere_jax.data.text_cache`: parses gin and runs `build_text_cache`; returns the exit status."""
    if not logging.root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s")
    logging.root.setLevel(logging.INFO)
    parser = gin_cli.argument_parser(
        "lumiere-text-cache", "Cache frozen-T5 text embeddings beside a task's examples.",
        "Give the run's gin files and data/text_cache.gin, e.g. --gin_file=runs/train_stunet.gin "
        "--gin_file=data/text_cache.gin --gin.TEXT_CACHE_DIR=/data/text_cache --gin.SyntheticMotionConfig.data_dir=DIR")
    args = gin_cli.parse_args(parser, sys.argv[1:] if argv is None else argv, "data/text_cache.gin")
    try:
        # Not finalized: run files hold required macros (MODEL_DIR, ...) that building a cache does not need.
        gin_cli.parse_gin(args)
        if _macro_unset("TEXT_CACHE_DIR"):
            raise gin_cli.UsageError("TEXT_CACHE_DIR is required: give --gin_file=data/text_cache.gin and "
                                     "--gin.TEXT_CACHE_DIR=/path/to/text_cache")
    except gin_cli.UsageError as error:
        print(f"lumiere-text-cache: error: {error}", file=sys.stderr)
        return 2
    build_text_cache()
    return 0


def _macro_unset(macro: str) -> bool:
    """True when `macro` is undefined or still `%gin.REQUIRED` (gin passes a placeholder when not finalized)."""
    try:
        value = gin.query_parameter(f"%{macro}")
    except ValueError:
        return True
    return isinstance(value, gin.config.ConfigurableReference) and str(value) == "%gin.REQUIRED"
