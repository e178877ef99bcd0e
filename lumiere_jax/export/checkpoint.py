"""Export a training checkpoint for inference: parameters only, with the config, a safetensors copy, and a
serialized sampling function.

Layout of an inference checkpoint (EXPORT_DIR):
  inference_checkpoint.json   manifest: format, source step and weights (EMA or raw), model name, stage,
                              parameterisation, sample shape, text encoder, parameter signature, file list
  params/                     Orbax PyTree of the full parameter tree (no optimizer state, no EMA copy)
  operative_config.gin        the export job's gin config; train_operative_config.gin: the training run's
  params.safetensors          every parameter under its "/"-joined Flax path inside the `params` collection,
                              e.g. "down_0_res_0/conv_0/kernel"; layouts as Flax (conv kernels [kh, kw, in, out],
                              dense kernels [in, out]); the metadata repeats the manifest's key facts
  sample_fn.jax_export        `jax.export` serialization (StableHLO) of base-model sampling, see `sampling_function`
`lumiere_jax.sample` loads EXPORT_DIR wherever it takes a checkpoint (sample/weights.py). EXPORT_DIR may be
local or `gs://`: Orbax writes `params/` itself, every other file goes through lumiere_jax/storage.py, and the
manifest is written last (an export without it is unfinished and is redone).
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import safetensors.numpy
from jax.experimental import multihost_utils

from lumiere_jax import storage
from lumiere_jax.diffusion import schedules
from lumiere_jax.models import param_paths
from lumiere_jax.sample import applications
from lumiere_jax.sample import base as base_stage
from lumiere_jax.sample import weights
from lumiere_jax.stages import adapter as adapter_lib
from lumiere_jax.stages import checkpoint_layout

SAFETENSORS_FILE = "params.safetensors"
FUNCTION_FILE = "sample_fn.jax_export"
KEY_NAMING = "'/'-joined Flax parameter paths inside the params collection, e.g. down_0_res_0/conv_0/kernel"

Params = Any


def function_arguments(adapter: adapter_lib.ModelAdapter) -> tuple[str, ...]:
    """Argument names of the exported sampling function, in order (after params and text_encoder_params)."""
    names = ("tokens", "text_mask", "keys", "guidance_weight")
    return names + (("condition", "condition_mask") if adapter.stage == "conditional" else ())


def sampling_function(adapter: adapter_lib.ModelAdapter, schedule: schedules.Schedule,
                      config: applications.SamplingConfig):
    """`f(params, text_encoder_params, tokens, text_mask, keys, guidance_weight[, condition, condition_mask])`
    -> video `[B, T, H, W, 3]` in [-1, 1]: base-model sampling of whole clips (t2v, or the <C, M> modes),
    `config.num_steps` steps, as `sample.base_stage.generate_base`.

    Shapes: `tokens: int32 [B, L]`, `text_mask: bool [B, L]`, `keys: uint32 [B, 2]` (raw key data, e.g.
    `jax.random.key_data(jax.random.key(seed))`), `guidance_weight: float32 [B]`, `condition: [B, T, H, W, 3]`,
    `condition_mask: [B, T, H, W, 1]`.
    """
    names = function_arguments(adapter)

    def sample_fn(params, text_encoder_params, *arrays):
        batch = dict(zip(names, arrays))
        stage = applications.Stage(adapter, params, text_encoder_params)
        return base_stage.generate_base(stage, batch, schedule, config, config.num_steps)

    return sample_fn


def argument_specs(adapter: adapter_lib.ModelAdapter, batch: int | Any) -> tuple[jax.ShapeDtypeStruct, ...]:
    """ShapeDtypeStructs of the batch arguments for a (possibly symbolic) batch size."""
    num_frames, height, width, _ = adapter.sample_shape
    length = adapter.text_length
    specs = {"tokens": ((batch, length), jnp.int32), "text_mask": ((batch, length), jnp.bool_),
             "keys": ((batch, 2), jnp.uint32), "guidance_weight": ((batch,), jnp.float32),
             "condition": ((batch, num_frames, height, width, 3), jnp.float32),
             "condition_mask": ((batch, num_frames, height, width, 1), jnp.float32)}
    return tuple(jax.ShapeDtypeStruct(*specs[name]) for name in function_arguments(adapter))


def export_sampling_function(adapter: adapter_lib.ModelAdapter, params: Params, text_encoder_params: Params,
                             schedule: schedules.Schedule, config: applications.SamplingConfig,
                             batch_size: int | None = None) -> tuple[bytes, str]:
    """Serializes `sampling_function` with `jax.export`; returns `(bytes, batch description)`.

    `batch_size=None` exports a symbolic batch dimension "b" (one artifact for every batch size); if the
    model cannot be exported symbolically, the export falls back to batch 1 and says so.
    """
    function = jax.jit(sampling_function(adapter, schedule, config))
    param_specs, text_specs = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype),
                                           (params, text_encoder_params))
    if batch_size is None:
        try:
            (batch,) = jax.export.symbolic_shape("b")
            exported = jax.export.export(function)(param_specs, text_specs, *argument_specs(adapter, batch))
            return exported.serialize(), "symbolic"
        except Exception as error:  # noqa: BLE001 -- any shape-polymorphism failure falls back to a fixed batch
            logging.warning("symbolic-batch export failed (%s: %s); exporting for batch size 1",
                            type(error).__name__, str(error)[:300])
            batch_size = 1
    exported = jax.export.export(function)(param_specs, text_specs, *argument_specs(adapter, batch_size))
    return exported.serialize(), str(batch_size)


def load_sampling_function(path: str):
    """Deserializes an exported sampling function: call `.call(params, text_encoder_params, *arrays)`."""
    return jax.export.deserialize(bytearray(storage.read_bytes(path)))


def host_params(params: Params) -> dict[str, np.ndarray]:
    """`{"/"-joined path: host array}` of a (possibly sharded, multi-host) parameter tree."""
    gathered = multihost_utils.process_allgather(params, tiled=True)
    return {path: np.asarray(leaf) for path, leaf in param_paths.flatten(gathered).items()}


def write_safetensors(path: str, flat_params: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Writes the parameters under their "/"-joined Flax paths (bfloat16 is stored as float32: NumPy has no
    native bfloat16 for the safetensors NumPy writer)."""
    tensors = {name: (value.astype(np.float32) if value.dtype == jnp.bfloat16 else value)
               for name, value in flat_params.items()}
    with storage.atomic_local_file(path, ".safetensors") as temporary:
        safetensors.numpy.save_file(tensors, temporary, metadata=metadata)


def export(
    checkpoint: str,
    output_dir: str,
    adapter: adapter_lib.ModelAdapter,
    mesh: jax.sharding.Mesh,
    rules,
    text_encoder_params: Params,
    schedule: schedules.Schedule,
    sampling: applications.SamplingConfig,
    use_ema: bool = True,
    write_safetensors_file: bool = True,
    export_function: bool = True,
    function_batch_size: int | None = None,
    gin_config: str = "",
) -> dict:
    """Writes the inference checkpoint of `checkpoint` (a training run, checkpoints/ or step folder) to
    `output_dir`; returns its manifest. See the module docstring for the layout."""
    if weights.is_inference_checkpoint(checkpoint):
        raise ValueError(f"{checkpoint} is already an inference checkpoint; export reads training checkpoints")
    if weights.is_inference_checkpoint(output_dir):
        raise FileExistsError(f"{output_dir} already holds an inference checkpoint; choose a new output_dir")
    params, info = weights.load_params(checkpoint, weights.abstract_params(adapter, mesh, rules), use_ema,
                                       adapter.name)
    output_dir = storage.normalize(output_dir)
    storage.makedirs(output_dir)
    params_dir = storage.join(output_dir, weights.PARAMS_ITEM)
    if jax.process_index() == 0:
        storage.remove(params_dir)  # left by an export that died before writing its manifest
    multihost_utils.sync_global_devices("export: stale params removed")
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(params_dir, params)
    checkpointer.wait_until_finished()
    manifest = {
        "format": weights.INFERENCE_FORMAT, "step": info["step"], "weights": info["weights"],
        "source": info["source"], "model_name": adapter.name, "stage": adapter.stage,
        "parameterization": adapter.parameterization, "sample_shape": list(adapter.sample_shape),
        "low_res_size": adapter.low_res_size, "text_length": adapter.text_length,
        "text_encoder": dict(vars(adapter.text_encoder.config)),
        "signature": checkpoint_layout.model_signature(params), "files": {"params": weights.PARAMS_ITEM},
    }
    if jax.process_index() == 0:
        run_config = storage.join(storage.parent(storage.parent(info["source"])), "operative_config.gin")
        if storage.isfile(run_config):
            storage.copy_file(run_config, storage.join(output_dir, "train_operative_config.gin"))
            manifest["files"]["train_operative_config"] = "train_operative_config.gin"
        storage.write_text_atomic(storage.join(output_dir, "operative_config.gin"), gin_config)
        manifest["files"]["operative_config"] = "operative_config.gin"
    if write_safetensors_file:
        flat = host_params(params)
        if jax.process_index() == 0:
            metadata = {"format": weights.INFERENCE_FORMAT, "key_naming": KEY_NAMING, "step": str(info["step"]),
                        "weights": info["weights"], "model_name": adapter.name}
            write_safetensors(storage.join(output_dir, SAFETENSORS_FILE), flat, metadata)
        manifest["files"]["safetensors"] = SAFETENSORS_FILE
        manifest["safetensors_key_naming"] = KEY_NAMING
    if export_function and adapter.stage not in adapter_lib.BASE_VIDEO_STAGES:
        logging.info("no sampling function exported: stage %r is not a base video model", adapter.stage)
    elif export_function:
        serialized, batch = export_sampling_function(adapter, params, text_encoder_params, schedule, sampling,
                                                     function_batch_size)
        if jax.process_index() == 0:
            storage.write_bytes_atomic(storage.join(output_dir, FUNCTION_FILE), serialized)
        manifest["files"]["sample_fn"] = FUNCTION_FILE
        manifest["sample_fn"] = {"batch": batch, "num_steps": sampling.num_steps,
                                 "arguments": ["params", "text_encoder_params", *function_arguments(adapter)],
                                 "sampling": {key: value for key, value in vars(sampling).items()}}
    if jax.process_index() == 0:
        storage.write_json_atomic(storage.join(output_dir, weights.INFERENCE_MANIFEST), manifest)
    logging.info("exported step %s (%s weights) of %s to %s", info["step"], info["weights"], info["source"],
                 output_dir)
    return manifest
