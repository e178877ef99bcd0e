"""Global batch assembly over 8 fake CPU devices: shardings, per-device contents, prefetch state."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from lumiere_jax.parallel import global_arrays, mesh as mesh_lib


def _local_batch(batch_size, offset=0):
    rng = np.random.default_rng(offset)
    return {
        "video": rng.normal(size=(batch_size, 2, 4, 4, 3)).astype(np.float32),
        "text_tokens": rng.integers(0, 100, (batch_size, 6)).astype(np.int32),
        "text_mask": rng.random((batch_size, 6)) < 0.5,
    }


@pytest.mark.parametrize("mesh_shape", [(2, 2, 2), (8, 1, 1), (1, 4, 2)])
def test_global_batch_shards_the_batch_over_data_axes(mesh_shape):
    mesh = mesh_lib.make_mesh(mesh_shape)
    ways = mesh_lib.data_axis_size(mesh)
    local = _local_batch(16)
    global_batch = global_arrays.make_global_batch(local, mesh)
    for key, array in global_batch.items():
        assert array.shape == local[key].shape and array.dtype == local[key].dtype
        assert array.sharding.spec == PartitionSpec(("data", "fsdp"))
        np.testing.assert_array_equal(np.asarray(array), local[key])
        rows_per_shard = 16 // ways
        for shard in array.addressable_shards:
            assert shard.data.shape[0] == rows_per_shard
            # Device (d, f, c, t) holds the rows of data-parallel index d * fsdp_size + f, for every c and t.
            d, f, _, _ = np.argwhere(mesh.devices == shard.device)[0]
            start = (d * mesh.shape["fsdp"] + f) * rows_per_shard
            np.testing.assert_array_equal(np.asarray(shard.data), local[key][start:start + rows_per_shard])
    assert len(global_batch["video"].addressable_shards) == 8


def test_indivisible_batch_names_the_fix():
    mesh = mesh_lib.make_mesh((4, 1, 2))
    with pytest.raises(ValueError, match="multiple of 4"):
        global_arrays.make_global_batch(_local_batch(6), mesh)


class _CountingIterator:
    """A local iterator with the DataIterator state protocol; batch k is _local_batch(8, k)."""

    def __init__(self):
        self.step = 0
        self.fetched = 0

    def __next__(self):
        batch = _local_batch(8, self.step)
        self.step += 1
        self.fetched += 1
        return batch

    def get_state(self):
        return {"step": self.step}

    def set_state(self, state):
        self.step = state["step"]


def test_prefetching_iterator_reports_consumed_position():
    mesh = mesh_lib.make_mesh((2, 2, 2))
    local = _CountingIterator()
    iterator = global_arrays.GlobalBatchIterator(local, mesh, prefetch=2)
    assert iterator.get_state() == {"step": 0}
    for step in range(3):
        batch = next(iterator)
        np.testing.assert_array_equal(np.asarray(batch["video"]), _local_batch(8, step)["video"])
        assert iterator.get_state() == {"step": step + 1}
    assert local.fetched == 5  # two batches ahead of the consumer
    iterator.set_state({"step": 1})
    np.testing.assert_array_equal(np.asarray(next(iterator)["text_tokens"]), _local_batch(8, 1)["text_tokens"])
    assert isinstance(next(iterator)["video"], jax.Array)
