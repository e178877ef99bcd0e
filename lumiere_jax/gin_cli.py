"""T5X-style gin flags shared by every command line (train, sample, export, evaluate).

`--gin_file` (repeatable) is looked up in `--gin_search_paths` (comma-separated, repeatable), then in this
repository's gin_configs/ and the working directory. `--gin.KEY=VALUE` adds one binding; a VALUE that is not a
gin literal is taken as a string, so `--gin.MODEL_DIR=/tmp/run` needs no inner quotes. `--gin_bindings` takes
raw binding lines as T5X does.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

import gin

from lumiere_jax.parallel import runtime

GIN_CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin_configs")


class UsageError(ValueError):
    """A problem with the command line or the gin configuration; reported without a traceback."""


def argument_parser(prog: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """A parser with the gin flags; callers add their own flags before `parse_args`."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    parser.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable)")
    parser.add_argument("--gin_search_paths", action="append", default=[],
                        help="comma-separated directories searched for gin files and includes (repeatable)")
    parser.add_argument("--gin_bindings", action="append", default=[], help="raw gin binding line (repeatable)")
    runtime.add_flags(parser)
    return parser


def gin_overrides(parser: argparse.ArgumentParser, unknown: Sequence[str]) -> list[str]:
    """Binding lines of the `--gin.KEY=VALUE` arguments; any other unknown argument is a parser error."""
    lines = []
    for item in unknown:
        if not item.startswith("--gin.") or "=" not in item:
            parser.error(f"unrecognised argument {item!r}; overrides are written --gin.KEY=VALUE")
        key, value = item[len("--gin."):].split("=", 1)
        lines.append(binding_line(key, value))
    return lines


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str], example_gin_file: str) -> argparse.Namespace:
    """Parses known flags; collects `--gin.KEY=VALUE` into `args.gin_overrides` and requires a gin file."""
    args, unknown = parser.parse_known_args(argv)
    args.gin_overrides = gin_overrides(parser, unknown)
    if not args.gin_file:
        parser.error(f"give at least one --gin_file, e.g. --gin_file={example_gin_file}")
    return args


def binding_line(key: str, value: str) -> str:
    """`KEY = VALUE`, quoting VALUE as a string when it is not a gin literal or reference."""
    try:
        gin.config.parse_value(value)
    except (SyntaxError, ValueError):
        value = repr(value)
    return f"{key} = {value}"


def parse_gin(args: argparse.Namespace) -> None:
    """Adds the search paths and parses the files and bindings (not finalized); errors become UsageError."""
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


def configure_run(args: argparse.Namespace) -> str:
    """Parses gin files and bindings of a command on a run directory; checks MODEL_DIR; finalizes; returns it."""
    parse_gin(args)
    try:
        model_dir = gin.query_parameter("%MODEL_DIR")
    except ValueError:
        model_dir = None
    if not isinstance(model_dir, str) or not model_dir:
        raise UsageError("MODEL_DIR is required: pass --gin.MODEL_DIR=/path/to/run (checkpoints, TensorBoard "
                         "events and the operative config are written there)")
    finalize()
    return model_dir


def finalize() -> None:
    """Locks the configuration; a required macro left unset becomes a UsageError naming the flag to pass."""
    try:
        gin.finalize()
    except ValueError as error:
        macro = str(error).split("/", 1)[0]
        raise UsageError(f"{error} Pass it on the command line, e.g. --gin.{macro}=...") from None
