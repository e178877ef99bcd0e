"""`python -m lumiere_jax.export ...`: see lumiere_jax/export/cli.py."""

import sys

from lumiere_jax.export import cli

if __name__ == "__main__":
    sys.exit(cli.main())
