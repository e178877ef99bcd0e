"""The repository passes `ruff check` (rules in ruff.toml; ruff pinned in requirements-test.txt)."""

import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format=concise", "."],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    if "No module named ruff" in result.stderr:
        pytest.fail("ruff is not installed here: pip install -r requirements-test.txt", pytrace=False)
    if result.returncode != 0:
        pytest.fail(f"ruff check (rules in ruff.toml) found problems:\n{result.stdout}{result.stderr}", pytrace=False)
