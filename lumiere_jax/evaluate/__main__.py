"""Command line of the evaluation job (`python -m lumiere_jax.evaluate`, console script `lumiere-evaluate`).

    python -m lumiere_jax.evaluate \\
      --gin_file=evaluate/synthetic.gin --gin_file=<the sampling job's gin files> \\
      --gin.MODEL_DIR=/tmp/lumiere/stunet [--steps=20,40] [--watch]

Gin flags as the trainer's (train/cli.py): `--gin_file` (repeatable, searched in `--gin_search_paths`, then
gin_configs/, then the working directory), `--gin_bindings`, `--gin.KEY=VALUE`. `--steps` evaluates only the
given checkpoint steps; `--watch` keeps polling MODEL_DIR for new checkpoints (`WatchConfig`, see job.py). Results:
MODEL_DIR/eval/<name>/metrics_<step>.json and TensorBoard scalars in MODEL_DIR/eval/<name>/.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from lumiere_jax import gin_cli
from lumiere_jax.parallel import runtime


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = gin_cli.argument_parser(
        "lumiere-evaluate", "Evaluate the checkpoints of a run (gin configured).",
        "Overrides: --gin.KEY=VALUE, e.g. --gin.MODEL_DIR=/tmp/run --gin.synthetic_prompts.num_prompts=8")
    parser.add_argument("--steps", default=None, help="comma-separated checkpoint steps (default: all)")
    parser.add_argument("--watch", action="store_true", help="keep evaluating new checkpoints as they appear")
    args = gin_cli.parse_args(parser, argv, "evaluate/synthetic.gin")
    try:
        args.steps = None if args.steps is None else [int(step) for step in args.steps.split(",") if step]
    except ValueError:
        parser.error(f"--steps={args.steps!r} must be comma-separated integers, e.g. --steps=20,40")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `lumiere-evaluate`; returns the exit status."""
    if not logging.root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s")
    logging.root.setLevel(logging.INFO)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    runtime.start(runtime.config_from_flags(args))
    from lumiere_jax.evaluate import job  # noqa: PLC0415 -- registers the configurables the gin files bind

    try:
        gin_cli.configure_run(args)
    except gin_cli.UsageError as error:
        print(f"lumiere-evaluate: error: {error}", file=sys.stderr)
        return 2
    overrides = {"steps": args.steps} if args.steps is not None else {}
    if args.watch:
        overrides["watch"] = job.WatchConfig()  # as gin binds it (WatchConfig.poll_seconds = ...)
    try:
        results = job.evaluate(**overrides)
    except RuntimeError as error:
        if "Required bindings" not in str(error):
            raise
        print(f"lumiere-evaluate: error: {error}; bind them in a gin file (e.g. the sampling job's "
              "sample/base.gin with evaluate/sampling.gin) or with --gin.KEY=VALUE", file=sys.stderr)
        return 2
    summary = {step: payload["metrics"] for step, payload in results.items()}
    print(json.dumps({"evaluated": summary}, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
