"""The export tests reuse the sampling tests' tiny models and helpers (tests/sample/tiny_setup.py)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sample"))

from tiny_setup import clean_gin, condition_files, tiny_models  # noqa: F401
