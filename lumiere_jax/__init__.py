"""lumiere_jax: Lumiere-style space-time diffusion video models in JAX/Flax."""

__version__ = "0.1.0"
