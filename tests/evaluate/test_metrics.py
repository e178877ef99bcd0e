"""Metric wrappers and the weights-file helpers they rely on."""

import numpy as np
import pytest

from lumiere_jax.evaluate import inception_score
from lumiere_jax.evaluate import metrics
from lumiere_jax.evaluate import networks
from lumiere_jax.evaluate import weights


def test_take_clip_uses_stride_and_rejects_short_videos():
    video = np.arange(20)[:, None, None, None] * np.ones((20, 2, 2, 3), np.uint8)
    np.testing.assert_array_equal(metrics.take_clip(video, 4, 3)[:, 0, 0, 0], [0, 3, 6, 9])
    with pytest.raises(ValueError, match="too short"):
        metrics.take_clip(video, 16, 2)


def test_inception_score_metric_chunks_and_matches_direct_computation():
    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 256, (16, 2, 2, 3), np.uint8) for _ in range(300)]  # two chunks
    table = rng.normal(size=(256, 5))

    def logits(clips):
        return np.stack([table[clip[0, 0, 0, 0]] for clip in clips])

    metric = metrics.InceptionScore(c3d_weights=None, num_splits=3, logits=logits)
    expected = inception_score.inception_score(logits(videos), 3)
    assert metric.compute(videos, [""] * 300) == {"is": pytest.approx(expected[0]),
                                                  "is_std": pytest.approx(expected[1])}


def test_clipsim_metric_pairs_each_chunk_with_its_prompts():
    videos = [np.full((2, 2, 2, 3), index % 256, np.uint8) for index in range(260)]
    prompts = [str(index % 256) for index in range(260)]

    def similarity(chunk, chunk_prompts):
        return np.array([float(video[0, 0, 0, 0] == int(prompt)) for video, prompt in zip(chunk, chunk_prompts)])

    assert metrics.CLIPSim(clip_weights=None, vocab=None, merges=None, similarity=similarity).compute(
        videos, prompts) == {"clipsim": 1.0}


def test_run_batched_pads_the_last_batch():
    seen = []

    def fn(batch):
        seen.append(batch.shape)
        return batch * 2

    out = networks.run_batched(fn, np.arange(5.0)[:, None], batch_size=2)
    np.testing.assert_array_equal(out[:, 0], [0, 2, 4, 6, 8])
    assert seen == [(2, 1)] * 3


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_flat_files_round_trip_with_collections_and_scalars(tmp_path, suffix):
    flat = {"a/b/kernel": np.ones((2, 3), np.float32), "batch_stats:a/bn/mean": np.zeros(3, np.float32),
            "logit_scale": np.array(2.5, np.float32)}
    path = str(tmp_path / f"w{suffix}")
    weights.save_flat(path, flat)
    loaded = weights.load_flat(path)
    assert {name: value.shape for name, value in loaded.items()} == {name: value.shape for name, value in flat.items()}
    variables = weights.unflatten_variables(loaded)
    assert set(variables) == {"params", "batch_stats"} and variables["params"]["logit_scale"] == 2.5
    assert weights.flatten_variables(variables).keys() == flat.keys()


def test_missing_weights_file_names_the_converter(tmp_path):
    with pytest.raises(FileNotFoundError, match="lumiere_jax.evaluate.convert"):
        weights.load_flat(str(tmp_path / "i3d.safetensors"))
