"""Process-wide caches keyed by what a model computes, so jobs run in one process share traces and compiles."""

from __future__ import annotations

from lumiere_jax.stages import adapter as adapter_lib


def adapter_key(adapter: adapter_lib.ModelAdapter | None) -> tuple | None:
    """What traced and compiled sampling code depends on (two adapters with equal keys behave the same)."""
    if adapter is None:
        return None
    return (adapter.module, adapter.stage, tuple(adapter.sample_shape), adapter.low_res_size, adapter.text_length,
            adapter.parameterization, adapter.upsample_residual_std, adapter.text_encoder.config)


class Unhashed:
    """Carries a value into an `lru_cache`d function without making it part of the key (all compare equal)."""

    def __init__(self, value):
        self.value = value

    def __hash__(self):
        return 0

    def __eq__(self, other):
        return isinstance(other, Unhashed)
