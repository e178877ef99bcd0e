"""Text-embedding cache: built from the tiny synthetic task, read back through seqio, checked against the encoder.

References are independent of the cache: the frozen T5 run on the tokens the batch carries, the original
task's pixels, and a train step fed the token batch (the encoder runs inside it).
"""

import glob
import json
import os
import tempfile

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf

from lumiere_jax import storage
from lumiere_jax.data import text_cache
from lumiere_jax.data.feature_converter import VideoFeatureConverter
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.stages import factory as stages
from lumiere_jax.stages.diffusion_config import DiffusionConfig
from lumiere_jax.train import inputs
from lumiere_jax.train import state as state_lib
from lumiere_jax.train import step as step_lib

TASK = "synthetic_motion_tiny"
TEXT_LENGTH = 24
SPLIT = "validation"  # 64 examples: small enough to encode in a test
BATCH = 8
FLOAT16_RTOL = 2.0 ** -11  # round-to-nearest error of float16, relative


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, synthetic_data_dir):
    directory = str(tmp_path_factory.mktemp("text_cache"))
    text_cache.build_text_cache(
        output_dir=directory, mixture_or_task_name=TASK, text_encoder="tiny", text_length=TEXT_LENGTH,
        splits=(SPLIT,), batch_size=BATCH, num_shards=3, synthetic_motion=None)
    return directory


@pytest.fixture(scope="module")
def encoder():
    return text_cache.load_text_encoder("tiny", None, "float32", train_seed=0)


def cached_iterator(cache_dir, text_encoder="tiny", t5_dir=None, **overrides):
    kwargs = dict(mixture_or_task_name=TASK, text_length=TEXT_LENGTH, synthetic_motion=None,
                  text_cache=inputs.TextCacheConfig(cache_dir, text_encoder, t5_dir), shuffle=False)
    kwargs.update(overrides)
    return inputs.seqio_iterator(SPLIT, BATCH, 0, 0, 1, **kwargs)


def shard_files(cache_dir):
    return sorted(glob.glob(os.path.join(cache_dir, TASK, SPLIT, "*")))


def test_manifest_and_shards(cache_dir):
    manifest = text_cache.read_manifest(text_cache.split_dir(cache_dir, TASK, SPLIT))
    assert manifest["count"] == 64 and manifest["num_shards"] == 3
    assert manifest["text_encoder"] == "tiny" and manifest["embedding_dim"] == 32
    assert manifest["text_length"] == TEXT_LENGTH and manifest["dtype"] == "float16"
    assert manifest["source_task"] == TASK and manifest["pixel_shape"] == [16, 32, 32, 3]
    names = [os.path.basename(path) for path in shard_files(cache_dir)]
    assert names == ["manifest.json"] + [f"{TASK}.tfrecord-0000{i}-of-00003" for i in range(3)]


def test_cached_embeddings_equal_the_encoder_output(cache_dir, encoder, synthetic_data_dir):
    text_encoder, params = encoder
    iterator = cached_iterator(cache_dir)
    batches = [next(iterator) for _ in range(64 // BATCH)]
    assert set(batches[0]) == {"video", "text_tokens", "text_mask", "text_embeddings"}
    embeddings = np.concatenate([batch["text_embeddings"] for batch in batches])
    tokens = np.concatenate([batch["text_tokens"] for batch in batches])
    mask = np.concatenate([batch["text_mask"] for batch in batches])
    assert embeddings.shape == (64, TEXT_LENGTH, 32) and embeddings.dtype == np.float32
    reference = np.asarray(text_encoder.encode(params, tokens, mask))
    np.testing.assert_allclose(embeddings, reference, rtol=FLOAT16_RTOL + 1e-5, atol=1e-7)
    assert np.all(embeddings[~mask] == 0) and np.all(np.abs(embeddings[mask]).sum(-1) > 0)
    # Stored as float16: the values are float16 numbers, rounded from the float32 encoder output.
    np.testing.assert_array_equal(embeddings.astype(np.float16).astype(np.float32), embeddings)
    assert not np.array_equal(embeddings, reference)

    # Pixels and tokens are the original task's (16 stored frames = 16 sampled, so frames are deterministic).
    original = inputs.seqio_iterator(SPLIT, BATCH, 0, 0, 1, mixture_or_task_name=TASK, text_length=TEXT_LENGTH,
                                     synthetic_motion=None, shuffle=False)
    expected = {}
    for _ in range(64 // BATCH):
        batch = next(original)
        expected.update({video.tobytes(): row for video, row in zip(batch["video"], batch["text_tokens"])})
    videos = np.concatenate([batch["video"] for batch in batches])
    assert len(expected) == 64 and {video.tobytes() for video in videos} == set(expected)
    for video, row in zip(videos, tokens):
        np.testing.assert_array_equal(row, expected[video.tobytes()])


def test_mismatched_encoder_or_length_fails_naming_the_fix(cache_dir):
    for overrides, field in ((dict(text_length=16), "text_length"), (dict(text_encoder="byt5_small"), "text_encoder"),
                             (dict(t5_dir="/models/t5"), "text_encoder_weights")):
        with pytest.raises(ValueError, match=f"{field}: cache has .*Rebuild it"):
            cached_iterator(cache_dir, **overrides)
    with pytest.raises(ValueError, match="text_encoder_weights: cache has 'random init \\(train seed 0\\)'"):
        inputs.seqio_iterator(SPLIT, BATCH, 1, 0, 1, mixture_or_task_name=TASK, text_length=TEXT_LENGTH,
                              synthetic_motion=None, text_cache=inputs.TextCacheConfig(cache_dir, "tiny"))
    with pytest.raises(ValueError, match="no complete 'train' split"):
        inputs.seqio_iterator("train", BATCH, 0, 0, 1, mixture_or_task_name=TASK, text_length=TEXT_LENGTH,
                              synthetic_motion=None, text_cache=inputs.TextCacheConfig(cache_dir, "tiny"))
    with pytest.raises(ValueError, match="no complete text cache"):
        cached_iterator(cache_dir, mixture_or_task_name="synthetic_motion_image_tiny")
    with pytest.raises(ValueError, match="bind TextCacheConfig.text_encoder"):
        cached_iterator(cache_dir, text_encoder=None)


def test_rerun_does_nothing_and_partial_output_is_rebuilt(cache_dir, synthetic_data_dir, encoder):
    before = {path: (os.stat(path).st_mtime_ns, open(path, "rb").read()) for path in shard_files(cache_dir)}
    try:
        status = text_cache.main([
            "--gin_file=data/synthetic_motion_tiny.gin", "--gin_file=data/text_cache.gin",
            f"--gin.TEXT_CACHE_DIR={cache_dir}", "--gin.TEXT_ENCODER='tiny'", "--gin.T5_DIR=None",
            f"--gin.TEXT_LENGTH={TEXT_LENGTH}", f"--gin.build_text_cache.splits=('{SPLIT}',)",
            "--gin.build_text_cache.synthetic_motion=None"])
    finally:
        gin.clear_config()
    assert status == 0
    assert {path: (os.stat(path).st_mtime_ns, open(path, "rb").read()) for path in shard_files(cache_dir)} == before

    # A killed run leaves shards without a manifest (and temporary files): the next run rebuilds the split.
    directory = text_cache.split_dir(cache_dir, TASK, SPLIT)
    os.remove(os.path.join(directory, "manifest.json"))
    with open(os.path.join(directory, f"tmp.{TASK}.tfrecord-00003"), "wb") as file:
        file.write(b"partial")
    identity = text_cache.EncoderIdentity.create("tiny", TEXT_LENGTH, None, 0)
    text_cache.build_split(TASK, SPLIT, cache_dir, *encoder, identity, batch_size=BATCH, num_shards=3)
    assert {path: open(path, "rb").read() for path in shard_files(cache_dir)} == {
        path: content for path, (_, content) in before.items()}

    other = text_cache.EncoderIdentity.create("tiny", 16, None, 0)
    with pytest.raises(ValueError, match="text_length: cache has 24, this run uses 16"):
        text_cache.build_split(TASK, SPLIT, cache_dir, *encoder, other)


def test_cli_requires_the_cache_dir():
    try:
        status = text_cache.main(["--gin_file=data/synthetic_motion_tiny.gin", "--gin_file=data/text_cache.gin"])
    finally:
        gin.clear_config()
    assert status == 2


def test_converter_pads_cached_embeddings():
    examples = [{"video": np.zeros((2, 4, 4, 3), np.float32), "text_tokens": np.arange(3, 3 + n, dtype=np.int32),
                 "text_embeddings": np.full((n, 5), n, np.float32)} for n in (2, 4)]
    dataset = tf.data.Dataset.from_generator(lambda: iter(examples), output_signature={
        "video": tf.TensorSpec([2, 4, 4, 3], tf.float32), "text_tokens": tf.TensorSpec([None], tf.int32),
        "text_embeddings": tf.TensorSpec([None, 5], tf.float32)})
    converter = VideoFeatureConverter()
    first, second = converter(dataset, converter.task_feature_lengths(4, 2)).as_numpy_iterator()
    np.testing.assert_array_equal(first["text_embeddings"], [[2] * 5] * 2 + [[0] * 5] * 2)
    np.testing.assert_array_equal(second["text_embeddings"], np.full((4, 5), 4))
    np.testing.assert_array_equal(first["text_mask"], [True, True, False, False])


@pytest.fixture
def classic_threefry():
    """XLA:CPU compiles programs drawing partitionable threefry bits slowly (tests/train/conftest.py); both
    steps compared here run under the same setting. Restored afterwards."""
    previous = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", False)
    yield
    jax.config.update("jax_threefry_partitionable", previous)


def test_train_step_loss_from_cached_batch_equals_encoder_loss(cache_dir, encoder, classic_threefry):
    _, params = encoder
    adapter = stages.unet_adapter(
        stage="t2i", size="tiny", text_encoder_preset="tiny", text_length=TEXT_LENGTH,
        overrides={"base_channels": 8, "channel_multipliers": (1,), "attention_levels": (),
                   "cross_attention_levels": (0,), "num_heads": 1, "norm_groups": 4, "embed_dim": 16})
    tx = optax.adamw(1e-3)
    model_params = nn.unbox(jax.jit(adapter.init)(jax.random.key(1)))
    state = state_lib.create_train_state(model_params, {}, tx, use_ema=False)
    config = DiffusionConfig(text_dropout_rate=0.5)  # some examples drop their text: same rng, same ones
    train_step = jax.jit(step_lib.bind_train_step(adapter, config, tx, lambda step: 1e-3, 0.0))
    cached = {key: jnp.asarray(value) for key, value in next(cached_iterator(cache_dir)).items()}
    tokens_only = {key: value for key, value in cached.items() if key != "text_embeddings"}
    rng = jax.random.key(7)

    def loss(batch):
        return float(train_step(state, batch, params, rng)[1]["loss"])

    from_cache, from_encoder = loss(cached), loss(tokens_only)
    np.testing.assert_allclose(from_cache, from_encoder, rtol=FLOAT16_RTOL)
    # The step uses the cached embeddings: other embeddings change the loss far more than float16 rounding does.
    shuffled = {**cached, "text_embeddings": cached["text_embeddings"][::-1]}
    text_effect = abs(loss(shuffled) - from_cache)
    assert abs(from_cache - from_encoder) < 0.05 * text_effect


def test_shards_are_dealt_round_robin_and_empty_ones_dropped(tmp_path):
    writer = text_cache._ShardWriter(str(tmp_path), "task", num_shards=5)
    for index in range(3):
        writer.write(b"record %d" % index)
    assert writer.commit() == 3
    names = sorted(os.listdir(tmp_path))
    assert names == [f"task.tfrecord-0000{i}-of-00003" for i in range(3)]
    contents = [[bytes(record) for record in tf.data.TFRecordDataset(str(tmp_path / name)).as_numpy_iterator()]
                for name in names]
    assert contents == [[b"record 0"], [b"record 1"], [b"record 2"]]


def test_trainer_from_cache_never_loads_the_text_encoder(cache_dir, tmp_path, classic_threefry):
    """A run on cached embeddings trains, evaluates and checkpoints without the T5 weights: the loader given
    to the trainer fails if it is called."""
    from lumiere_jax.train import loop, monitor  # noqa: PLC0415 -- only this test needs the trainer

    def refuse_to_load(rng):
        raise AssertionError("the text encoder was loaded although batches carry cached embeddings")

    def dataset_fn(split, batch_size, seed, shard_index, num_shards):
        del split  # only the validation split is cached here
        return inputs.seqio_iterator(SPLIT, batch_size, seed, shard_index, num_shards, mixture_or_task_name=TASK,
                                     text_length=TEXT_LENGTH, synthetic_motion=None,
                                     text_cache=inputs.TextCacheConfig(cache_dir, "tiny"))

    adapter = stages.unet_adapter(stage="t2i", size="tiny", text_encoder_preset="tiny", text_length=TEXT_LENGTH)
    result = loop.train(model_dir=str(tmp_path / "run"), adapter=adapter, dataset_fn=dataset_fn, num_train_steps=3,
                        global_batch_size=4, text_encoder_params_fn=refuse_to_load,
                        mesh=mesh_lib.MeshConfig(num_devices=1),
                        monitor=monitor.MonitorConfig(log_every_steps=1, evaluation=monitor.EvalConfig(every_steps=3)))
    assert int(result.state.step) == 3
    losses = [value for entry in result.history for key, value in entry.items() if key.endswith("loss")]
    assert len(losses) >= 3 and np.all(np.isfinite(losses))


def test_cache_built_on_gcs_reads_back_like_the_local_one(cache_dir, synthetic_data_dir, gcs_emulator, tmp_path,
                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the local mirror goes
    (tmp_path / "tmp").mkdir()
    bucket = gcs_emulator.new_bucket()
    gcs_cache = f"{bucket}/text_cache"
    text_cache.build_text_cache(
        output_dir=gcs_cache, mixture_or_task_name=TASK, text_encoder="tiny", text_length=TEXT_LENGTH,
        splits=(SPLIT,), batch_size=BATCH, num_shards=3, synthetic_motion=None)
    local_files = {os.path.basename(path): path for path in shard_files(cache_dir)}
    assert gcs_emulator.objects(bucket) == sorted(f"text_cache/{TASK}/{SPLIT}/{name}" for name in local_files)
    for name, path in local_files.items():
        content = storage.read_bytes(f"{gcs_cache}/{TASK}/{SPLIT}/{name}")
        if name == text_cache.MANIFEST:
            assert json.loads(content) == json.load(open(path))
        else:
            assert content == open(path, "rb").read()

    # One after the other: both register the same `<task>_cached_text` name, which the iterators look up lazily.
    from_bucket = cached_iterator(gcs_cache)
    bucket_batches = [next(from_bucket) for _ in range(64 // BATCH)]
    local = cached_iterator(cache_dir)
    for bucket_batch in bucket_batches:
        local_batch = next(local)
        assert set(bucket_batch) == set(local_batch)
        for key, value in local_batch.items():
            np.testing.assert_array_equal(bucket_batch[key], value)
    mirrors = os.listdir(tmp_path / "tmp" / "lumiere_mirrors")
    assert len(mirrors) == 1  # the split, downloaded once
    assert sorted(os.listdir(tmp_path / "tmp" / "lumiere_mirrors" / mirrors[0])) == sorted(local_files)
    assert not os.path.exists(tmp_path / "gs:")


def test_pretrained_encoder_is_loaded_in_the_dtype_the_run_files_give_the_trainer():
    def loaded_dtypes(bound: str, given: str | None):
        try:
            gin.parse_config(f"import lumiere_jax.stages.factory\npretrained_text_encoder.param_dtype = '{bound}'")
            _, params = text_cache.load_text_encoder("tiny_words", "caption_t5_tiny", given, train_seed=0)
        finally:
            gin.clear_config()
        return {str(leaf.dtype) for leaf in jax.tree.leaves(params)}

    assert loaded_dtypes("bfloat16", None) == {"bfloat16"}  # runs/common.gin
    assert loaded_dtypes("float32", None) == {"float32"}  # runs/cpu_tiny.gin
    assert loaded_dtypes("float32", "bfloat16") == {"bfloat16"}  # an explicit build_text_cache.t5_param_dtype
