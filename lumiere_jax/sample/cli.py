"""Command line of the batch sampler (`python -m lumiere_jax.sample`, console script `lumiere-sample`).

    python -m lumiere_jax.sample \\
      --gin_file=sample/base.gin --gin_file=my_models.gin \\
      --gin.sample_videos.prompts=/data/prompts.jsonl --gin.sample_videos.output_dir=/tmp/videos \\
      --gin.sample_videos.base_checkpoint=/runs/stunet --shard_id=0 --num_shards=4

Gin flags as every command line here (lumiere_jax/gin_cli.py), plus `--shard_id` / `--num_shards` to split the
rows over independent jobs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import gin

from lumiere_jax import gin_cli
from lumiere_jax.parallel import runtime


def parse_args(argv: Sequence[str], prog: str, description: str) -> argparse.Namespace:
    """Gin flags (lumiere_jax/gin_cli.py) plus job sharding."""
    parser = gin_cli.argument_parser(prog, description,
                                     "Overrides: --gin.KEY=VALUE, e.g. --gin.sample_videos.batch_size=16")
    parser.add_argument("--shard_id", type=int, default=0, help="which part of the rows this job samples")
    parser.add_argument("--num_shards", type=int, default=1, help="number of jobs the rows are split over")
    args = gin_cli.parse_args(parser, argv, "sample/base.gin")
    if args.num_shards < 1 or not 0 <= args.shard_id < args.num_shards:
        parser.error(f"--shard_id={args.shard_id} must lie in [0, --num_shards={args.num_shards})")
    return args


def configure_gin(args: argparse.Namespace) -> None:
    """A fresh configuration per run (also when called twice in one process), then the files and bindings."""
    gin.clear_config()
    gin_cli.parse_gin(args)
    gin_cli.finalize()


def run(argv: Sequence[str] | None, prog: str, description: str, entry) -> int:
    """Shared main of the sampling and export commands: flags -> gin -> `entry(shard_id, num_shards)`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)
    args = parse_args(sys.argv[1:] if argv is None else argv, prog, description)
    runtime.start(runtime.config_from_flags(args))
    try:
        configure_gin(args)
        entry(args.shard_id, args.num_shards)
    except gin_cli.UsageError as error:
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
