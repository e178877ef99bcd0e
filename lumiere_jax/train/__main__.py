"""`python -m lumiere_jax.train ...`: see lumiere_jax/train/cli.py."""

import sys

from lumiere_jax.train import cli

if __name__ == "__main__":
    sys.exit(cli.main())
