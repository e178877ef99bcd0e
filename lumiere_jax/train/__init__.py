"""T5X-style training: state, step, loop, checkpoints (entry point: `python -m lumiere_jax.train`)."""
