"""Command line of the trainer (`python -m lumiere_jax.train`, console script `lumiere-train`).

    python -m lumiere_jax.train \\
      --gin_file=runs/pretrain_t2i.gin --gin_file=mesh/cpu.gin \\
      --gin.MODEL_DIR=/tmp/t2i --gin.train.num_train_steps=100

`--gin_file` (repeatable) is looked up in `--gin_search_paths` (comma-separated, repeatable), then in this
repository's gin_configs/ and the working directory. `--gin.KEY=VALUE` (T5X style) adds one binding; a VALUE
that is not a gin literal is taken as a string, so `--gin.MODEL_DIR=/tmp/run` needs no inner quotes.
`--gin_bindings` takes raw binding lines as T5X does. MODEL_DIR is a required macro.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import gin

from lumiere_jax.parallel import partitioning

GIN_CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                               "gin_configs")


class UsageError(ValueError):
    """A problem with the command line or the gin configuration; reported without a traceback."""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="lumiere-train", description="Train a Lumiere stage (T5X-style gin configuration).",
        epilog="Overrides: --gin.KEY=VALUE, e.g. --gin.MODEL_DIR=/tmp/run --gin.train.num_train_steps=10")
    parser.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable)")
    parser.add_argument("--gin_search_paths", action="append", default=[],
                        help="comma-separated directories searched for gin files and includes (repeatable)")
    parser.add_argument("--gin_bindings", action="append", default=[], help="raw gin binding line (repeatable)")
    args, unknown = parser.parse_known_args(argv)
    args.gin_overrides = []
    for item in unknown:
        if not item.startswith("--gin.") or "=" not in item:
            parser.error(f"unrecognised argument {item!r}; overrides are written --gin.KEY=VALUE")
        key, value = item[len("--gin."):].split("=", 1)
        args.gin_overrides.append(binding_line(key, value))
    if not args.gin_file:
        parser.error("give at least one --gin_file, e.g. --gin_file=runs/pretrain_t2i.gin")
    return args


def binding_line(key: str, value: str) -> str:
    """`KEY = VALUE`, quoting VALUE as a string when it is not a gin literal or reference."""
    try:
        gin.config.parse_value(value)
    except (SyntaxError, ValueError):
        value = repr(value)
    return f"{key} = {value}"


def configure_gin(args: argparse.Namespace) -> str:
    """Parses gin files and bindings; checks MODEL_DIR; returns its value."""
    search_paths = [path for entry in args.gin_search_paths for path in entry.split(",") if path]
    for path in [*search_paths, GIN_CONFIGS_DIR, os.getcwd()]:
        gin.add_config_file_search_path(path)
    bindings = [*args.gin_bindings, *args.gin_overrides]
    # gin logs an ERROR for every search path that lacks a file before finding it; real failures raise.
    previous_level = logging.root.level
    logging.root.setLevel(logging.CRITICAL)
    try:
        gin.parse_config_files_and_bindings(args.gin_file, bindings, finalize_config=False)
    except (ValueError, OSError, SyntaxError) as error:
        raise UsageError(f"invalid gin configuration: {error}") from None
    finally:
        logging.root.setLevel(previous_level)
    try:
        model_dir = gin.query_parameter("%MODEL_DIR")
    except ValueError:
        model_dir = None
    if not isinstance(model_dir, str) or not model_dir:
        raise UsageError("MODEL_DIR is required: pass --gin.MODEL_DIR=/path/to/run (checkpoints, TensorBoard "
                         "events and the operative config are written there)")
    try:
        gin.finalize()
    except ValueError as error:  # a required macro (e.g. T2I_CHECKPOINT) left unset
        macro = str(error).split("/", 1)[0]
        raise UsageError(f"{error} Pass it on the command line, e.g. --gin.{macro}=...") from None
    return model_dir


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status (0 also after a preemption save)."""
    if not logging.root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s")
    logging.root.setLevel(logging.INFO)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    partitioning.maybe_initialize_distributed()
    # Imported after the distributed start-up; registers the configurables the gin files bind.
    from lumiere_jax.train import loop  # noqa: PLC0415

    try:
        model_dir = configure_gin(args)
    except UsageError as error:
        print(f"lumiere-train: error: {error}", file=sys.stderr)
        return 2
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "config.gin"), "w") as file:
        file.write(gin.config_str())
    result = loop.train()
    if result.preempted:
        logging.warning("stopped early by preemption at step %d; rerun the same command to resume",
                        int(result.state.step))
    return 0
