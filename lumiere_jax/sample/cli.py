"""Command line of the batch sampler (`python -m lumiere_jax.sample`, console script `lumiere-sample`).

    python -m lumiere_jax.sample \\
      --gin_file=sample/base.gin --gin_file=my_models.gin \\
      --gin.sample_videos.prompts=/data/prompts.jsonl --gin.sample_videos.output_dir=/tmp/videos \\
      --gin.sample_videos.base_checkpoint=/runs/stunet --shard_id=0 --num_shards=4

Flags as the trainer's (train/cli.py): `--gin_file` (repeatable), `--gin_search_paths`, `--gin_bindings`,
`--gin.KEY=VALUE`; plus `--shard_id` / `--num_shards` to split the rows over independent jobs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import gin

from lumiere_jax.parallel import partitioning
from lumiere_jax.train import cli as train_cli


def parse_args(argv: Sequence[str], prog: str, description: str) -> argparse.Namespace:
    """Gin flags (`--gin_file`, `--gin_search_paths`, `--gin_bindings`, `--gin.KEY=VALUE`) plus job sharding."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     epilog="Overrides: --gin.KEY=VALUE, e.g. --gin.sample_videos.batch_size=16")
    parser.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable)")
    parser.add_argument("--gin_search_paths", action="append", default=[],
                        help="comma-separated directories searched for gin files and includes (repeatable)")
    parser.add_argument("--gin_bindings", action="append", default=[], help="raw gin binding line (repeatable)")
    parser.add_argument("--shard_id", type=int, default=0, help="which part of the rows this job samples")
    parser.add_argument("--num_shards", type=int, default=1, help="number of jobs the rows are split over")
    args, unknown = parser.parse_known_args(argv)
    args.gin_overrides = []
    for item in unknown:
        if not item.startswith("--gin.") or "=" not in item:
            parser.error(f"unrecognised argument {item!r}; overrides are written --gin.KEY=VALUE")
        key, value = item[len("--gin."):].split("=", 1)
        args.gin_overrides.append(train_cli.binding_line(key, value))
    if not args.gin_file:
        parser.error("give at least one --gin_file")
    if args.num_shards < 1 or not 0 <= args.shard_id < args.num_shards:
        parser.error(f"--shard_id={args.shard_id} must lie in [0, --num_shards={args.num_shards})")
    return args


def configure_gin(args: argparse.Namespace) -> None:
    """Parses the gin files and bindings (search paths: the flags, then gin_configs/, then the working dir)."""
    gin.clear_config()  # a fresh configuration per run, also when called twice in one process
    search_paths = [path for entry in args.gin_search_paths for path in entry.split(",") if path]
    for path in [*search_paths, train_cli.GIN_CONFIGS_DIR, os.getcwd()]:
        gin.add_config_file_search_path(path)
    try:
        gin.parse_config_files_and_bindings(args.gin_file, [*args.gin_bindings, *args.gin_overrides])
    except (ValueError, OSError, SyntaxError) as error:
        raise train_cli.UsageError(f"invalid gin configuration: {error}") from None


def run(argv: Sequence[str] | None, prog: str, description: str, entry) -> int:
    """Shared main of the sampling and export commands: flags -> gin -> `entry(shard_id, num_shards)`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)
    args = parse_args(sys.argv[1:] if argv is None else argv, prog, description)
    partitioning.maybe_initialize_distributed()
    try:
        configure_gin(args)
        entry(args.shard_id, args.num_shards)
    except train_cli.UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        if "Required bindings" not in str(error):
            raise
        print(f"{prog}: error: {error}; bind them in a gin file or with --gin.KEY=VALUE", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `lumiere-sample`; returns the exit status."""
    from lumiere_jax.sample import job  # noqa: PLC0415 -- after the distributed start-up; registers configurables

    return run(argv, "lumiere-sample", "Sample videos for the rows of a prompt file (gin configured).",
               lambda shard_id, num_shards: job.sample_videos(shard_id=shard_id, num_shards=num_shards))
