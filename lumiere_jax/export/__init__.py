"""Export of training checkpoints for inference: params-only Orbax checkpoint, safetensors, jax.export."""
