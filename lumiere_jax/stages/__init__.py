"""A stage's model as training and inference both see it: adapter, gin factory, diffusion config, frozen text."""
