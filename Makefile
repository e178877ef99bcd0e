# The two set-up commands on a fresh machine: `make demo` and `make test`.
# Each creates the local virtual environment .venv with the pinned packages first.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed
# More demo flags, e.g. `make demo-quick DEMO_ARGS=--out_dir=/tmp/demo`.
DEMO_ARGS ?=
# Test processes (pytest-xdist), a file per worker: XLA compiles on one thread, so two workers keep 2 cores busy.
TEST_WORKERS ?= 2

$(STAMP): requirements.txt requirements-test.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-test.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $(STAMP)

.PHONY: install test demo demo-quick
install: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

demo: $(STAMP)
	$(VENV)/bin/python -m lumiere_jax.demo $(DEMO_ARGS)

demo-quick: $(STAMP)
	$(VENV)/bin/python -m lumiere_jax.demo --quick $(DEMO_ARGS)
