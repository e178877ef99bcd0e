"""Test set-up: 8 fake CPU devices so sharding tests can build a data x fsdp x tensor mesh."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gcs_emulator import gcs_emulator  # noqa: E402,F401 -- a session fixture for every test package
