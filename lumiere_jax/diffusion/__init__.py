"""Diffusion math as pure, jittable JAX functions (no Flax): schedules, parameterization, losses, samplers,
guidance, augmentation (SR noise conditioning) and multidiffusion (temporal windows for SSR)."""
