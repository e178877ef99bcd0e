"""Test set-up: 8 fake CPU devices so sharding tests can build a data x fsdp x tensor mesh."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import importlib.util

# Loaded from its file, not by putting tests/ on sys.path: there its folders (data/, sample/ ...) would shadow
# gin's package lookup of relative config names such as data/text_cache.gin (a namespace package has no file).
import sys


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                      f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # importable by name from every test package (tests/pod_harness.py)
    spec.loader.exec_module(module)
    return module


gcs_emulator = _load("gcs_emulator").gcs_emulator  # a session fixture for every test package
_load("pod_harness")
