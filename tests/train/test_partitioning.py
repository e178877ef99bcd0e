"""Multi-host detection, shardings from logical names, batch shardings."""

import flax.linen as nn
import jax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.parallel import partitioning, runtime


@pytest.mark.parametrize("environ, expected", [
    ({}, False),
    ({"TPU_WORKER_HOSTNAMES": "localhost"}, False),
    ({"TPU_WORKER_HOSTNAMES": "10.0.0.1,10.0.0.2"}, True),
    ({"MEGASCALE_COORDINATOR_ADDRESS": "10.0.0.1:8080"}, True),
    ({"SLURM_NTASKS": "1"}, False),
    ({"SLURM_NTASKS": "4"}, True),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, True),
])
def test_detects_pods(environ, expected):
    assert runtime.is_multi_process_environment(environ) is expected


def test_initializes_distributed_only_on_a_pod_or_when_given_a_coordinator(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
    assert runtime.maybe_initialize_distributed(runtime.RuntimeConfig(), {}) is False and calls == []
    assert runtime.maybe_initialize_distributed(runtime.RuntimeConfig(), {"TPU_WORKER_HOSTNAMES": "a,b,c,d"}) is True
    assert calls[-1]["coordinator_address"] is None and calls[-1]["heartbeat_timeout_seconds"] == 100
    explicit = runtime.RuntimeConfig("127.0.0.1:1234", num_processes=2, process_id=1, heartbeat_timeout_seconds=7)
    assert runtime.maybe_initialize_distributed(explicit, {}) is True
    assert calls[-1] == dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=1,
                             heartbeat_timeout_seconds=7)


def test_logical_names_map_to_fsdp_and_tensor_and_indivisible_dims_replicate():
    mesh = mesh_lib.make_mesh((2, 2, 2))
    specs = {"kernel": PartitionSpec("conv_kernel", None, "conv_in", "conv_out"),
             "dense": PartitionSpec("embed", "mlp")}
    abstract = {"kernel": jax.ShapeDtypeStruct((3, 3, 3, 8), "float32"),
                "dense": jax.ShapeDtypeStruct((16, 8), "float32")}
    shardings = partitioning.shardings_from_logical(specs, mesh, mesh_lib.LOGICAL_AXIS_RULES, abstract)
    assert shardings["dense"].spec == PartitionSpec(("fsdp", "clip"), "tensor")  # clip=1 here
    # 3 input channels cannot split over fsdp=2: replicated on that dimension.
    assert shardings["kernel"].spec == PartitionSpec(None, None, None, "tensor")


def test_repeated_logical_name_is_kept_on_its_first_dimension():
    boxed = {"kernel": nn.LogicallyPartitioned(jax.ShapeDtypeStruct((3, 3), "float32"), ("embed", "embed"))}
    assert partitioning.logical_specs(boxed)["kernel"] == PartitionSpec("embed", None)


def test_batch_sharding_splits_the_leading_dimension_over_data_axes():
    mesh = mesh_lib.make_mesh((2, 2, 2))
    sharding = partitioning.batch_sharding(mesh, 5)
    assert sharding == NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None, None, None, None))
