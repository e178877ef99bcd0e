"""Determinism and resumption: batch k is a pure function of (config, seed, k)."""

import json

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
