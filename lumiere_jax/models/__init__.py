"""Flax linen modules: the T2I U-Net, STUNet, SSR and the T5 text encoder."""
