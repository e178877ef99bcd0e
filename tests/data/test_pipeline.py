"""Determinism and resumption (by skipping and from snapshots): batch k is a pure function of (config, seed, k)."""

import dataclasses
import glob
import json
import logging
import os
import shutil

import jax
import numpy as np
import pytest

from lumiere_jax.data import masks, pipeline
from lumiere_jax.parallel import global_arrays, mesh as mesh_lib

_CONDITIONAL = pipeline.InputConfig(
    "synthetic_motion_tiny_joint", global_batch_size=4, text_length=48, seed=11,
    mask_rates=masks.MaskRates(unconditional=0.5))


def _take(iterator, num):
    return [next(iterator) for _ in range(num)]


def _assert_same(batches, others):
    for batch, other in zip(batches, others, strict=True):
        assert batch.keys() == other.keys()
        for key in batch:
            np.testing.assert_array_equal(np.asarray(batch[key]), np.asarray(other[key]), err_msg=key)


@pytest.fixture(scope="module")
def reference_batches(synthetic_data_dir):
    """Five batches of an uninterrupted conditional run (mixture, shuffle, augmentation, masks)."""
    return _take(pipeline.DataIterator(_CONDITIONAL), 5)


def test_same_seed_same_batches(reference_batches):
    _assert_same(reference_batches[:3], _take(pipeline.DataIterator(_CONDITIONAL), 3))
    batch = reference_batches[0]
    np.testing.assert_allclose(batch["condition"], batch["video"] * batch["condition_mask"])
    assert batch["condition_mask"].shape == (4, 16, 32, 32, 1)


def test_other_seed_other_batches(reference_batches):
    other = next(pipeline.DataIterator(pipeline.InputConfig(
        _CONDITIONAL.mixture_or_task_name, global_batch_size=4, text_length=48, seed=12,
        mask_rates=_CONDITIONAL.mask_rates)))
    assert not np.array_equal(other["video"], reference_batches[0]["video"])


def test_resume_at_step_k_sees_batch_k(reference_batches):
    iterator = pipeline.DataIterator(_CONDITIONAL)
    _take(iterator, 2)
    state = json.loads(json.dumps(iterator.get_state()))
    assert state == {"step": 2, "seed": 11, "name": "synthetic_motion_tiny_joint"}
    resumed = pipeline.DataIterator(_CONDITIONAL)
    resumed.set_state(state)
    _assert_same(reference_batches[2:5], _take(resumed, 3))
    _assert_same(reference_batches[4:5], [next(pipeline.DataIterator(_CONDITIONAL, start_step=4))])
    with pytest.raises(ValueError, match="seed"):
        resumed.set_state({"step": 1, "seed": 5})


def test_global_iterator_state_counts_consumed_batches_not_prefetched(reference_batches):
    mesh = mesh_lib.make_mesh((2, 2, 2))
    iterator = global_arrays.GlobalBatchIterator(pipeline.DataIterator(_CONDITIONAL), mesh, prefetch=2)
    first = _take(iterator, 2)
    assert iterator.get_state()["step"] == 2  # three more are already queued or in flight
    _assert_same(reference_batches[:2], first)
    assert first[0]["video"].sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
    resumed = global_arrays.GlobalBatchIterator(pipeline.DataIterator(_CONDITIONAL), mesh)
    resumed.set_state(iterator.get_state())
    _assert_same(reference_batches[2:4], _take(resumed, 2))


def _snapshot_state(directory):
    (path,) = glob.glob(os.path.join(directory, "shard_*"))
    with open(os.path.join(path, "state.json")) as file:
        return json.load(file)


def _record_builds(monkeypatch):
    """The start steps of the pipelines built from now on (a snapshot restore must not skip)."""
    starts = []
    build = pipeline.make_dataset

    def recording(config, start_step=0, *args, **kwargs):
        starts.append(start_step)
        return build(config, start_step, *args, **kwargs)
    monkeypatch.setattr(pipeline, "make_dataset", recording)
    return starts


def test_snapshot_resumes_at_batch_k_without_skipping(reference_batches, tmp_path, monkeypatch):
    iterator = pipeline.DataIterator(_CONDITIONAL)
    _take(iterator, 2)
    iterator.save_snapshot(str(tmp_path))
    saved = _snapshot_state(str(tmp_path))
    assert saved.pop("config")["global_batch_size"] == 4
    assert saved == {"step": 2, "seed": 11, "name": "synthetic_motion_tiny_joint", "shard_index": 0,
                     "num_shards": 1, "symbolic": True, "built_at": 0, "pending_batches": 0}
    assert not glob.glob(str(tmp_path / "*.tmp-*"))
    starts = _record_builds(monkeypatch)
    resumed = pipeline.DataIterator(_CONDITIONAL)
    resumed.set_state(json.loads(json.dumps(iterator.get_state())), str(tmp_path))
    _assert_same(reference_batches[2:5], _take(resumed, 3))
    assert starts == [0] and resumed.get_state()["step"] == 5


def test_global_iterator_snapshot_keeps_its_prefetched_batches(reference_batches, tmp_path):
    mesh = mesh_lib.make_mesh((2, 2, 2))
    iterator = global_arrays.GlobalBatchIterator(pipeline.DataIterator(_CONDITIONAL), mesh, prefetch=2)
    _take(iterator, 1)  # the host iterator is at 3: batches 1 and 2 wait on device
    iterator.save_snapshot(str(tmp_path / "first"))
    assert _snapshot_state(str(tmp_path / "first"))["pending_batches"] == 2
    resumed = global_arrays.GlobalBatchIterator(pipeline.DataIterator(_CONDITIONAL), mesh)
    resumed.set_state(iterator.get_state(), str(tmp_path / "first"))
    resumed.save_snapshot(str(tmp_path / "again"))  # before serving the restored batches: it saves them again
    _assert_same(reference_batches[1:5], _take(resumed, 4))
    again = global_arrays.GlobalBatchIterator(pipeline.DataIterator(_CONDITIONAL), mesh)
    again.set_state({"step": 1, "seed": 11}, str(tmp_path / "again"))
    _assert_same(reference_batches[1:3], _take(again, 2))


def test_unusable_snapshots_fall_back_to_skipping(reference_batches, tmp_path, caplog):
    # A pipeline resumed by skipping (its graph skips one batch) writes a snapshot at step 3.
    iterator = pipeline.DataIterator(_CONDITIONAL, start_step=1)
    _take(iterator, 2)
    good = str(tmp_path / "good")
    iterator.save_snapshot(good)
    assert _snapshot_state(good)["built_at"] == 1
    state = iterator.get_state()
    corrupt = str(tmp_path / "corrupt")
    shutil.copytree(good, corrupt)
    for path in glob.glob(os.path.join(corrupt, "*", "iterator.data-*")):
        with open(path, "r+b") as file:
            file.truncate(os.path.getsize(path) // 2)
    cases = [(good, state, 3, None), (corrupt, state, 3, "unusable"),
             (str(tmp_path / "missing"), state, 3, "NotFoundError"),
             (good, {**state, "step": 2}, 2, "is of another position or run")]
    for directory, resume_state, step, problem in cases:
        caplog.clear()
        resumed = pipeline.DataIterator(_CONDITIONAL)
        with caplog.at_level(logging.WARNING):
            resumed.set_state(resume_state, directory)
        if problem is None:
            assert "unusable" not in caplog.text
        else:
            assert problem in caplog.text and f"by skipping {step} batches instead" in caplog.text
        _assert_same(reference_batches[step:step + 2], _take(resumed, 2))
    # Same task, seed and step but another batch size: the saved positions would not mean the same batches.
    caplog.clear()
    other = pipeline.DataIterator(dataclasses.replace(_CONDITIONAL, global_batch_size=2))
    with caplog.at_level(logging.WARNING):
        other.set_state(state, good)
    assert "is of another position or run" in caplog.text and "by skipping 3 batches" in caplog.text


def test_explicit_snapshot_of_a_cached_image_task(synthetic_data_dir, tmp_path):
    """In-memory caches have no symbolic checkpoint: the snapshot saves the cache and buffers, still exact."""
    config = pipeline.InputConfig("synthetic_motion_image_tiny", global_batch_size=4, text_length=8, seed=3,
                                  cache_in_memory=True)
    expected = _take(pipeline.DataIterator(config), 4)
    iterator = pipeline.DataIterator(config)
    _take(iterator, 2)
    iterator.save_snapshot(str(tmp_path))
    assert not _snapshot_state(str(tmp_path))["symbolic"]
    resumed = pipeline.DataIterator(config)
    resumed.restore_snapshot(str(tmp_path), iterator.get_state())
    _assert_same(expected[2:4], _take(resumed, 2))
    assert expected[0]["image"].shape == (4, 32, 32, 3)


def test_hosts_read_disjoint_shards(synthetic_data_dir):
    def first_batch(index):
        config = pipeline.InputConfig(
            "synthetic_motion_tiny", global_batch_size=16, text_length=8, split="validation", shuffle=False)
        return next(pipeline.DataIterator(config, shard_index=index, num_shards=2))["video"]
    shards = [first_batch(0), first_batch(1)]
    keys = [{clip.tobytes() for clip in shard} for shard in shards]
    assert len(keys[0]) == len(keys[1]) == 8 and not keys[0] & keys[1]


def test_host_batch_size():
    assert pipeline.host_batch_size(32, process_count=4) == 8
    with pytest.raises(ValueError, match="not divisible by the 3 hosts"):
        pipeline.host_batch_size(32, process_count=3)


def test_windows_are_cut_before_masks_and_never_longer_than_clips(synthetic_data_dir):
    config = dataclasses.replace(_CONDITIONAL, mixture_or_task_name="synthetic_motion_tiny", window_frames=8,
                                 mask_rates=masks.MaskRates(inpainting=0.0, cinemagraph=0.0, unconditional=0.0))
    batch = next(pipeline.DataIterator(config))
    assert batch["video"].shape == (4, 8, 32, 32, 3)
    np.testing.assert_array_equal(batch["condition_mask"][:, 0], 1.0)  # image-to-video: the window's first frame
    np.testing.assert_array_equal(batch["condition_mask"][:, 1:], 0.0)
    with pytest.raises(ValueError, match="clips of 16 frames, fewer than the model's window_frames=32"):
        pipeline.DataIterator(dataclasses.replace(config, window_frames=32)).__next__()
