"""Session fixtures of the sampling tests (defined in tiny_setup.py, shared with tests/export)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tiny_setup import clean_gin, condition_files, tiny_models  # noqa: F401
