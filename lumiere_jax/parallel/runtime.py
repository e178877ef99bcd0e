"""Process start-up shared by every command line: XLA:CPU's flags, the multi-host runtime and the persistent
compilation cache.

Called once, before any other JAX call (`jax.distributed.initialize` must come first on a pod, and XLA reads
`XLA_FLAGS` when its first backend starts).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import logging
import os
from collections.abc import Mapping, MutableMapping

import jax

# Environment variables that mark a multi-process job: a TPU pod slice (more than one worker host),
# a multi-slice job (Megascale), a SLURM / Open MPI launch of several tasks, or an explicit coordinator.
_POD_MARKERS = ("MEGASCALE_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS")
DEFAULT_COMPILATION_CACHE_DIR = os.path.join("~", ".cache", "lumiere_jax", "xla")
# XLA:CPU convolutions in XLA's own (Eigen) kernels instead of YNNPACK's, dots staying on YNNPACK: 1.5x faster 3x3
# convolutions and 20-22% faster CPU train steps with this jaxlib (BENCHMARKS.md 2a). A user's own setting of the
# flag in XLA_FLAGS wins.
CPU_CONVOLUTION_FLAG_NAME = "--xla_cpu_experimental_ynn_fusion_type"
CPU_CONVOLUTION_FLAG = f"{CPU_CONVOLUTION_FLAG_NAME}=-individual_convolution"


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """How this process joins its job, and where compiled programs are cached.

    Attributes:
      coordinator_address: `host:port` of process 0's coordinator; None lets JAX discover it (Cloud TPU,
        SLURM, Open MPI) when the environment marks a multi-process job.
      num_processes, process_id: explicit layout (with `coordinator_address`, e.g. several processes on one
        machine); None: discovered.
      heartbeat_timeout_seconds: a host that stops answering for this long fails the others with an error
        (rather than leaving them hanging in a collective).
      compilation_cache_dir: JAX's persistent compilation cache (local or `gs://`, shared by restarts); "" turns
        it off. An existing `JAX_COMPILATION_CACHE_DIR` setting wins over the default.
    """

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    heartbeat_timeout_seconds: int = 100
    compilation_cache_dir: str | None = DEFAULT_COMPILATION_CACHE_DIR


def add_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime (multi-host start-up, compilation cache)")
    group.add_argument("--coordinator_address", default=None, help="host:port of process 0 (default: discovered)")
    group.add_argument("--num_processes", type=int, default=None, help="processes in the job (default: discovered)")
    group.add_argument("--process_id", type=int, default=None, help="this process's index (default: discovered)")
    group.add_argument("--heartbeat_timeout_seconds", type=int, default=100,
                       help="seconds without a heartbeat before the other hosts fail with an error")
    group.add_argument("--compilation_cache_dir", default=DEFAULT_COMPILATION_CACHE_DIR,
                       help="persistent compilation cache (local or gs://); '' turns it off")


def config_from_flags(args: argparse.Namespace) -> RuntimeConfig:
    return RuntimeConfig(args.coordinator_address, args.num_processes, args.process_id,
                         args.heartbeat_timeout_seconds, args.compilation_cache_dir)


def is_multi_process_environment(environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment describes a job spread over several processes (hosts)."""
    environ = os.environ if environ is None else environ
    if any(environ.get(name) for name in _POD_MARKERS):
        return True
    hostnames = environ.get("TPU_WORKER_HOSTNAMES", "")
    if len([host for host in hostnames.split(",") if host.strip()]) > 1:
        return True
    for count_name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        if int(environ.get(count_name, "1") or "1") > 1:
            return True
    return False


def maybe_initialize_distributed(config: RuntimeConfig = RuntimeConfig(),
                                 environ: Mapping[str, str] | None = None) -> bool:
    """Calls `jax.distributed.initialize` for a multi-process job (explicit or detected); returns whether it did.

    On CPU, cross-process collectives use gloo (XLA:CPU has no other implementation in this jax).
    """
    if config.coordinator_address is None and not is_multi_process_environment(environ):
        return False
    if (os.environ if environ is None else environ).get("JAX_PLATFORMS", "") == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    logging.info("multi-process job: jax.distributed.initialize(coordinator=%s, processes=%s, id=%s)",
                 config.coordinator_address or "discovered", config.num_processes, config.process_id)
    jax.distributed.initialize(coordinator_address=config.coordinator_address, num_processes=config.num_processes,
                               process_id=config.process_id,
                               heartbeat_timeout_seconds=config.heartbeat_timeout_seconds)
    return True


def accelerator_installed() -> bool:
    """True when a TPU runtime (libtpu) or a JAX PJRT plugin (CUDA, ROCm) is installed beside jaxlib."""
    if importlib.util.find_spec("libtpu") is not None:
        return True
    return any(True for _ in importlib.metadata.entry_points(group="jax_plugins"))


def configure_cpu_flags(environ: MutableMapping[str, str] | None = None) -> bool:
    """Adds `CPU_CONVOLUTION_FLAG` to XLA_FLAGS in a CPU-only process; returns whether it did.

    Left alone: XLA_FLAGS that already set the flag, and installs with an accelerator (other runtimes parse
    XLA_FLAGS too, and gain nothing from it) unless JAX_PLATFORMS is "cpu". Takes effect only before JAX's first
    backend starts.
    """
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "")
    if CPU_CONVOLUTION_FLAG_NAME in flags:
        return False
    if environ.get("JAX_PLATFORMS", "") != "cpu" and accelerator_installed():
        return False
    environ["XLA_FLAGS"] = f"{flags} {CPU_CONVOLUTION_FLAG}".strip()
    return True


def enable_compilation_cache(directory: str | None) -> str | None:
    """Turns on JAX's persistent compilation cache in `directory` (unless JAX_COMPILATION_CACHE_DIR is set);
    returns the directory in use (None: off)."""
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    if not directory:
        return None
    if "://" not in directory:
        directory = os.path.abspath(os.path.expanduser(directory))
    jax.config.update("jax_compilation_cache_dir", directory)
    return directory


def start(config: RuntimeConfig) -> None:
    """Sets XLA:CPU's flags, joins the job (if multi-process), then turns on the compilation cache."""
    if configure_cpu_flags():
        logging.info("XLA_FLAGS: %s", os.environ["XLA_FLAGS"])
    maybe_initialize_distributed(config)
    cache = enable_compilation_cache(config.compilation_cache_dir)
    logging.info("persistent compilation cache: %s", cache or "off")
