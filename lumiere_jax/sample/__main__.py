"""`python -m lumiere_jax.sample ...`: see lumiere_jax/sample/cli.py."""

import sys

from lumiere_jax.sample import cli

if __name__ == "__main__":
    sys.exit(cli.main())
