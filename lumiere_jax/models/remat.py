"""Rematerialisation policies of the U-Net (`UNetConfig.remat`): what the backward pass keeps of a block unit.

The unit is one U-Net block as the paper draws it: the residual block, the level's spatial self- and
cross-attention, then the temporal block (Fig. 4: (2+1)D conv, or the stacked temporal attention at the
coarsest level). A rematerialised unit keeps its input and recomputes the rest in the backward pass, except
what the policy saves:

  none:                  no rematerialisation: every intermediate is kept (most memory, fewest FLOPs).
  full:                  only the unit's input is kept; every op of the unit is recomputed once (least memory,
                         about one extra forward pass).
  save_block_outputs:    the output of each block in the unit is kept too (`checkpoint_name(h, BLOCK_OUTPUT)`);
                         each block recomputes only its own internals. What per-block remat kept before.
  save_dots:             convolution and matmul outputs are kept (`jax.checkpoint_policies.dots_saveable`
                         counts `conv_general_dilated`), normalisations and activations are recomputed: close
                         to `none` in FLOPs, less memory.
  offload_block_outputs: as save_block_outputs, but the block outputs wait in pinned host memory
                         (`save_and_offload_only_these_names`): device memory as `full`, plus host transfers.
                         JAX's `offload_dot_with_no_batch_dims` would move only the dense projections here
                         (its policy matches no convolution), so the offload is by name.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

BLOCK_OUTPUT = "block_output"
REMAT_POLICIES = ("none", "full", "save_block_outputs", "save_dots", "offload_block_outputs")


def checkpoint_policy(name: str) -> Callable | None:
    """The `jax.checkpoint` policy of a `REMAT_POLICIES` name; None for "none" (no rematerialisation)."""
    policies = jax.checkpoint_policies
    if name == "none":
        return None
    if name == "full":
        return policies.nothing_saveable
    if name == "save_block_outputs":
        return policies.save_only_these_names(BLOCK_OUTPUT)
    if name == "save_dots":
        return policies.dots_saveable
    if name == "offload_block_outputs":
        return policies.save_and_offload_only_these_names(
            names_which_can_be_saved=(), names_which_can_be_offloaded=(BLOCK_OUTPUT,),
            offload_src="device", offload_dst="pinned_host")
    raise ValueError(f"unknown remat policy {name!r}; choose one of {REMAT_POLICIES}")
