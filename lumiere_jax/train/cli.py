"""Command line of the trainer (`python -m lumiere_jax.train`, console script `lumiere-train`).

    python -m lumiere_jax.train \\
      --gin_file=runs/pretrain_t2i.gin --gin_file=mesh/cpu.gin \\
      --gin.MODEL_DIR=/tmp/t2i --gin.train.num_train_steps=100

Gin flags as every command line here (lumiere_jax/gin_cli.py); MODEL_DIR is a required macro.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import gin
import jax

from lumiere_jax import gin_cli, storage
from lumiere_jax.parallel import runtime


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = gin_cli.argument_parser(
        "lumiere-train", "Train a Lumiere stage (T5X-style gin configuration).",
        "Overrides: --gin.KEY=VALUE, e.g. --gin.MODEL_DIR=/tmp/run --gin.train.num_train_steps=10")
    return gin_cli.parse_args(parser, argv, "runs/pretrain_t2i.gin")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status (0 also after a preemption save)."""
    if not logging.root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s")
    logging.root.setLevel(logging.INFO)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    runtime.start(runtime.config_from_flags(args))
    # Imported after the distributed start-up; registers the configurables the gin files bind.
    from lumiere_jax.train import loop  # noqa: PLC0415

    try:
        model_dir = gin_cli.configure_run(args)
    except gin_cli.UsageError as error:
        print(f"lumiere-train: error: {error}", file=sys.stderr)
        return 2
    if jax.process_index() == 0:
        storage.write_text_atomic(storage.join(model_dir, "config.gin"), gin.config_str())
    result = loop.train()
    if result.preempted:
        logging.warning("stopped early by preemption at step %d; rerun the same command to resume",
                        int(result.state.step))
    return 0
