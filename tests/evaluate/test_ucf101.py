"""Zero-shot UCF101 protocol pieces: class-proportional prompts, real clips, reference statistics."""

import numpy as np
import pytest

from lumiere_jax.evaluate import frechet
from lumiere_jax.evaluate import metrics
from lumiere_jax.evaluate import ucf101


def test_allocation_is_proportional_and_sums_exactly():
    counts = [121, 44, 100, 0, 35]
    allocation = ucf101.allocate_samples(counts, 1000)
    assert allocation.sum() == 1000 and allocation[3] == 0
    exact = np.array(counts) / sum(counts) * 1000
    assert np.all(np.abs(allocation - exact) < 1)
    uniform = ucf101.allocate_samples([1] * 101, 10_000)  # 10000 = 101 * 99 + 1: ties go to the first class
    assert uniform[0] == 100 and np.all(uniform[1:] == 99)


def test_class_prompts_are_class_names_as_words():
    prompts = ucf101.class_prompts(["ApplyEyeMakeup", "YoYo", "PlayingDaf"], [2, 0, 1])
    assert prompts == ["apply eye makeup", "apply eye makeup", "playing daf"]


def test_clips_take_the_first_16_frames_and_skip_short_videos():
    rng = np.random.default_rng(0)
    examples = [{"video": rng.integers(0, 256, (frames, 8, 10, 3), np.uint8), "label": 0}
                for frames in (20, 10, 16, 30)]
    clips = list(ucf101.clips_from_examples(iter(examples), num_clips=2))
    assert len(clips) == 2
    np.testing.assert_array_equal(clips[0], examples[0]["video"][:16])
    np.testing.assert_array_equal(clips[1], examples[2]["video"])


def test_reference_statistics_stream_through_the_fvd_features(tmp_path):
    rng = np.random.default_rng(1)
    clips = [rng.integers(0, 256, (16, 4, 4, 3), np.uint8) for _ in range(300)]  # more than one chunk
    fvd = metrics.FVD(i3d_weights=None, reference_stats=str(tmp_path / "stats.npz"),
                      features=lambda videos: np.stack(videos).reshape(len(videos), -1)[:, :5].astype(np.float64))
    assert ucf101.reference_statistics(fvd, iter(clips), str(tmp_path / "stats.npz")) == 300
    mu, sigma, count = frechet.load_stats(str(tmp_path / "stats.npz"))
    features = np.stack(clips).reshape(300, -1)[:, :5].astype(np.float64)
    np.testing.assert_allclose(mu, features.mean(axis=0))
    np.testing.assert_allclose(sigma, np.cov(features, rowvar=False), rtol=1e-8)
    # Generated videos equal to the reference set: FVD 0.
    assert fvd.compute(clips, [""] * 300)["fvd"] == pytest.approx(0.0, abs=1e-6)


def test_missing_ucf101_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build ucf101"):
        ucf101.ucf101_prompts(data_dir=str(tmp_path))
