"""The benchmarks' own train step: v-prediction diffusion loss, gradients of the trainable parameters only, Adam.

It isolates the U-Net's cost. Compared with `lumiere_jax.train.step.train_step` it leaves out the T5 encoder
(text embeddings come precomputed in the batch: the encoder is frozen and its cost does not depend on the U-Net),
text dropout, gradient clipping, EMA and the non-finite guard (elementwise work over the trainable parameters).

STUNet stage (paper section 2): the T2I weights are frozen and only the temporal parameters
(`models.inflate.trainable_mask`) get gradients and optimizer state. Image stage: every parameter trains.
An `IFUNetConfig` (DeepFloyd IF, models/if_unet.py) runs as the IF stage trains: eps-loss on IF's schedule.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lumiere_jax.diffusion import losses
from lumiere_jax.diffusion import schedules
from lumiere_jax.models import if_unet
from lumiere_jax.models import inflate
from lumiere_jax.models import unet as unet_lib
from lumiere_jax.models.config import UNetConfig
from lumiere_jax.models.if_config import IFUNetConfig
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.parallel import partitioning
from lumiere_jax.stages.if_stage import IFDenoiser
from lumiere_jax.train import state as state_lib

LEARNING_RATE = 1e-4


@dataclasses.dataclass(frozen=True)
class StepSetup:
    """Everything needed to jit, lower or run the benchmark step of one config on one mesh.

    `args` are abstract (`jax.ShapeDtypeStruct`) arguments of `step`, `shardings` their NamedShardings.
    """

    config: UNetConfig | IFUNetConfig
    mesh: jax.sharding.Mesh
    optimizer: optax.GradientTransformation
    freeze_spatial: bool
    step: Any
    args: tuple
    shardings: tuple
    num_params: int
    num_trainable: int

    def jitted(self):
        """The step jitted with explicit shardings; trainable parameters and optimizer state are donated."""
        trainable, _, opt_state, _, replicated = self.shardings
        return jax.jit(self.step, in_shardings=self.shardings, out_shardings=(trainable, opt_state, replicated),
                       donate_argnums=(0, 2))

    def concrete_args(self, seed: int = 0) -> tuple:
        """Real arguments for running the step: freshly initialised parameters and a random batch."""
        batch_rng = jax.random.key(seed)
        params = random_params(self.config, seed)
        trainable, frozen = state_lib.split_params(params, _trainable_mask(params, self.freeze_spatial))
        abstract_batch = self.args[3]
        keys = jax.random.split(batch_rng, len(abstract_batch))
        batch = {name: _random_like(key, leaf) for key, (name, leaf) in zip(keys, abstract_batch.items())}
        args = (trainable, frozen, self.optimizer.init(trainable), batch, jnp.array([0, seed], jnp.uint32))
        return jax.device_put(args, self.shardings)


def _trainable_mask(params: Any, freeze_spatial: bool) -> Any | None:
    """STUNet: only the temporal parameters train (paper section 2); otherwise all (None)."""
    return inflate.trainable_mask(params) if freeze_spatial else None


def _is_if(config: UNetConfig | IFUNetConfig) -> bool:
    return isinstance(config, IFUNetConfig)


def _boxed_params(config: UNetConfig | IFUNetConfig) -> Any:
    """Abstract boxed parameters of our U-Net or of the IF U-Net (whose paths `IFDenoiser` shares)."""
    init = if_unet.init_variables if _is_if(config) else unet_lib.init_variables
    return jax.eval_shape(lambda: init(config, jax.random.key(0)))["params"]


def _example_batch(config: UNetConfig | IFUNetConfig, global_batch: int, video: bool) -> dict:
    """Abstract `{"x0", "text_embeddings", "text_mask"[, "low_res", "noise_aug_logsnr"]}` of the step."""
    if _is_if(config):
        inputs = jax.eval_shape(functools.partial(if_unet.example_inputs, config, global_batch, video))
        inputs["noise_aug_logsnr"] = inputs.pop("noise_level", None)
    else:
        inputs = jax.eval_shape(functools.partial(unet_lib.example_inputs, config, global_batch, video))
    batch = {"x0": inputs["x"], "text_embeddings": inputs["text_embeddings"], "text_mask": inputs["text_mask"]}
    batch.update({key: inputs[key] for key in ("low_res", "noise_aug_logsnr") if inputs.get(key) is not None})
    return batch


def random_params(config: UNetConfig | IFUNetConfig, seed: int = 0) -> Any:
    """Random-normal parameters (scale 0.02) of the model of `config`, drawn by NumPy from the abstract tree.

    Speed does not depend on the values, and XLA:CPU takes minutes to compile a U-Net's real (threefry) init.
    """
    rng = np.random.default_rng(seed)
    abstract = nn.unbox(_boxed_params(config))
    return jax.tree.map(lambda leaf: jnp.asarray(0.02 * rng.standard_normal(leaf.shape), leaf.dtype), abstract)


def _random_like(key: jax.Array, leaf: jax.ShapeDtypeStruct) -> jax.Array:
    """Random data of an abstract batch entry: True masks, uniform [-1, 1] floats (pixels, embeddings)."""
    if leaf.dtype == jnp.bool_:
        return jnp.ones(leaf.shape, bool)
    return jax.random.uniform(key, leaf.shape, leaf.dtype, -1.0, 1.0)


def _train_step(trainable, frozen, opt_state, batch, rng, *, module: nn.Module,
                optimizer: optax.GradientTransformation, schedule: schedules.Schedule, parameterization: str):
    """One step; `batch = {"x0": [B, (T,) H, W, 3], "text_embeddings": [B, L, D], "text_mask": [B, L]}`."""
    noise_rng, dropout_rng = jax.random.split(jax.random.wrap_key_data(rng))
    x0 = batch["x0"]
    z, logsnr, eps, _ = losses.sample_noisy_inputs(noise_rng, x0, schedule)
    low_res = {key: batch[key] for key in ("low_res", "noise_aug_logsnr") if key in batch}

    def loss_fn(trainable_params):
        params = state_lib.merge_params(trainable_params, frozen)
        prediction = module.apply({"params": params}, z, logsnr, batch["text_embeddings"], batch["text_mask"],
                                  train=True, rngs={"dropout": dropout_rng}, **low_res)
        # Channels past x0's are a learned variance (IF's output), which the loss does not train.
        return losses.diffusion_loss(prediction[..., :x0.shape[-1]], x0, eps, logsnr, parameterization)

    loss, grads = jax.value_and_grad(loss_fn)(trainable)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, loss


def setup(config: UNetConfig | IFUNetConfig, mesh: jax.sharding.Mesh, batch_per_shard: int, video: bool,
          freeze_spatial: bool) -> StepSetup:
    """Abstract arguments and shardings of the step for `config` on `mesh`.

    The global batch is `batch_per_shard` times the data-parallel ways (data x fsdp). `video=False` trains the
    image (T2I) network on `[B, H, W, 3]`; `freeze_spatial` trains only the temporal parameters.
    """
    module = IFDenoiser(config) if _is_if(config) else unet_lib.UNet(config)
    boxed = _boxed_params(config)
    params = nn.unbox(boxed)
    param_shardings = partitioning.shardings_from_logical(
        partitioning.logical_specs(boxed), mesh, mesh_lib.LOGICAL_AXIS_RULES, abstract_tree=params)
    mask = _trainable_mask(params, freeze_spatial)
    trainable, frozen = state_lib.split_params(params, mask)
    trainable_shardings, frozen_shardings = state_lib.split_params(param_shardings, mask)

    optimizer = optax.adam(LEARNING_RATE)
    opt_state = jax.eval_shape(optimizer.init, trainable)
    replicated = partitioning.replicated(mesh)
    opt_shardings = optax.tree_map_params(
        optimizer, lambda _, sharding: sharding, opt_state, trainable_shardings,
        transform_non_params=lambda _: replicated)

    global_batch = batch_per_shard * mesh_lib.data_axis_size(mesh)
    batch = _example_batch(config, global_batch, video)
    batch_shardings = partitioning.batch_shardings(batch, mesh)
    rng = jax.ShapeDtypeStruct((2,), jnp.uint32)

    schedule = schedules.get_schedule("if_squared_cosine" if _is_if(config) else "cosine")
    step = functools.partial(_train_step, module=module, optimizer=optimizer, schedule=schedule,
                             parameterization="eps" if _is_if(config) else "v")

    def count(tree) -> int:
        return sum(leaf.size for leaf in jax.tree.leaves(tree))

    return StepSetup(config=config, mesh=mesh, optimizer=optimizer, freeze_spatial=freeze_spatial, step=step,
                     args=(trainable, frozen, opt_state, batch, rng),
                     shardings=(trainable_shardings, frozen_shardings, opt_shardings, batch_shardings, replicated),
                     num_params=count(params), num_trainable=count(trainable))
