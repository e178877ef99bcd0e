"""Command line of the exporter (`python -m lumiere_jax.export`, console script `lumiere-export`).

    python -m lumiere_jax.export --gin_file=sample/export.gin \\
      --gin.CHECKPOINT=/runs/stunet --gin.EXPORT_DIR=/models/stunet_inference

Flags as the sampler's (sample/cli.py). The model is configured as for sampling (`export_checkpoint.adapter`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gin
import jax

from lumiere_jax.export import checkpoint as export_lib
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.sample import applications
from lumiere_jax.sample import cli as sample_cli
from lumiere_jax.stages import adapter as adapter_lib
from lumiere_jax.stages import text as text_lib
from lumiere_jax.stages.diffusion_config import DiffusionConfig


@gin.configurable
def export_checkpoint(
    checkpoint: str = gin.REQUIRED,
    output_dir: str = gin.REQUIRED,
    adapter: adapter_lib.ModelAdapter = gin.REQUIRED,
    use_ema: bool = True,
    write_safetensors: bool = True,
    export_function: bool = True,
    function_batch_size: int | None = None,
    sampling: applications.SamplingConfig = applications.SamplingConfig(),
    diffusion: DiffusionConfig = DiffusionConfig(),
    text_encoder_params_fn: Callable[[jax.Array], Any] | None = None,
    train_seed: int = 0,
    mesh: mesh_lib.MeshConfig = mesh_lib.MeshConfig(),
) -> dict:
    """Exports `checkpoint` (EMA weights by default) to `output_dir`; see lumiere_jax/export/checkpoint.py.

    The serialized sampling function bakes in `sampling` (steps, guidance settings) and `diffusion`'s
    schedule; `function_batch_size=None` makes its batch dimension symbolic. The text encoder is needed
    only to trace that function (`text_encoder_params_fn` and `train_seed` as in sampling's `TextConfig`).
    """
    device_mesh, rules = mesh.make_mesh(), mesh.rules
    with mesh_lib.mesh_context(device_mesh, rules):
        text_encoder_params, _ = text_lib.load_text_encoder_params(
            adapter.text_encoder, text_encoder_params_fn, train_seed, device_mesh, rules)
    # Traced outside the mesh: the serialized function carries no sharding constraints and runs on any device.
    return export_lib.export(checkpoint, output_dir, adapter, device_mesh, rules, text_encoder_params,
                             diffusion.schedule_fn, sampling, use_ema, write_safetensors, export_function,
                             function_batch_size, gin.config_str())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `lumiere-export`; returns the exit status."""
    return sample_cli.run(argv, "lumiere-export", "Export a training checkpoint for inference (gin configured).",
                          lambda shard_id, num_shards: export_checkpoint())
