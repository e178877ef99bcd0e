"""The SSR alone on given low-resolution clips (no base stage): what the SSR adds over plain interpolation.

    python -m lumiere_jax.sample.upsample --gin_file=sample/base.gin --gin_file=sample/ssr.gin \\
      --gin_file=sample/cpu_tiny.gin --gin_file=sample/upsample.gin --gin.SSR_CHECKPOINT=/runs/ssr \\
      --gin.upsample_clips.inputs=/low_res.npz --gin.upsample_clips.output=/ssr.npz

`inputs` holds `low_res: float32 [B, T, h, w, 3]` in [-1, 1] and `prompts: str [B]`; `output` gets
`video: float32 [B, T, H, W, 3]` in [-1, 1]. The models, sampler settings and text encoder are the sampling job's
(`ModelsConfig.ssr_adapter`, `ssr_checkpoint`, `ssr_diffusion`, `SamplingConfig`, `TextConfig`): the SSR runs
exactly as after a base clip (`ssr.upsample_ssr`: noise augmentation, MultiDiffusion windows, guidance). Row `b`'s
randomness comes from `PRNGKey(seed + b)`. The demo uses it to compare the SSR with bilinear upsampling.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np

from lumiere_jax import storage
from lumiere_jax.data import vocab
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.sample import applications
from lumiere_jax.sample import cli
from lumiere_jax.sample import job
from lumiere_jax.sample import ssr as ssr_stage

if __name__ == "__main__":
    # Run as `python -m`: hand over to the module imported under its own name, so that gin registers
    # `upsample_clips` once (sample/upsample.gin imports lumiere_jax.sample.upsample).
    from lumiere_jax.sample import upsample as _imported

    sys.exit(_imported.main())


@gin.configurable
def upsample_clips(
    inputs: str = gin.REQUIRED,
    output: str = gin.REQUIRED,
    models: job.ModelsConfig = gin.REQUIRED,
    sampling: applications.SamplingConfig = applications.SamplingConfig(),
    text: job.TextConfig = job.TextConfig(),
    mesh: mesh_lib.MeshConfig = mesh_lib.MeshConfig(),
    seed: int = 0,
) -> np.ndarray:
    """Upsamples every clip of `inputs` with the SSR and writes them to `output`; returns them."""
    adapter = models.sampled_ssr_adapter()
    if adapter is None:
        raise ValueError("upsample_clips needs the SSR: include sample/ssr.gin and keep ModelsConfig.use_ssr=True")
    with np.load(io.BytesIO(storage.read_bytes(inputs))) as arrays:
        low_res, prompts = arrays["low_res"].astype(np.float32), [str(prompt) for prompt in arrays["prompts"]]
    device_mesh = mesh.make_mesh()
    with mesh_lib.mesh_context(device_mesh, mesh.rules):
        stage = job.load_stage(adapter, models.ssr_checkpoint, models.use_ema, text, device_mesh, mesh.rules)
        tokens, mask = vocab.tokenize(prompts, vocab.get_vocabulary(text.sentencepiece_model), adapter.text_length)
        keys = jax.vmap(jax.random.key_data)(jax.vmap(jax.random.key)(jnp.arange(len(prompts)) + seed))

        def upsample(params, text_params, low_res, batch):
            stage = applications.Stage(adapter, params, text_params)
            return ssr_stage.upsample_ssr(stage, low_res, batch, models.ssr_diffusion.schedule_fn, sampling)

        video = jax.jit(upsample)(stage.params, stage.text_encoder_params, jnp.asarray(low_res),
                                  {"keys": keys, "ssr_tokens": jnp.asarray(tokens), "ssr_text_mask": jnp.asarray(mask)})
        video = np.asarray(video, np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, video=video)
    storage.write_bytes_atomic(output, buffer.getvalue())
    return video


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(argv, "lumiere_jax.sample.upsample", __doc__.split("\n\n")[0],
                   lambda shard_id, num_shards: upsample_clips())


if __name__ == "__main__":
    sys.exit(main())
