"""Where an SSR falls short of bilinear upsampling: its one-call x0 prediction at fixed noise levels.

Ground-truth clips of the demo's scored prompts (lumiere_jax/demo.py) at the SSR's size are noised to each
level; the SSR's fused, guided and thresholded denoiser (`sample/ssr.py::ssr_denoiser`, as the sampler calls
it, low-res input = the clips area-downsampled, not augmented) predicts x0, and the PSNR of that prediction
against the truth is printed next to bilinear upsampling of the same low-res input and next to `z / alpha`
(the noisy input rescaled: what a denoiser that did nothing would score). A sampler walks all levels from
t = 1 to 0, so a level where the prediction is worse than bilinear shows where sampled outputs lose.

    python -m benchmarks.ssr_noise_levels --gin_file=sample/ssr.gin --gin_file=sample/cpu_tiny.gin \\
      --gin_file=sample/demo.gin --gin.SSR_CHECKPOINT=out/demo/full/runs/ssr [--clips 4] [--weights 1,3]

Gin flags as for the sampling job (`ModelsConfig`, `SamplingConfig`, `TextConfig`, mesh); the base model is
not loaded (BASE_CHECKPOINT / PROMPTS / OUTPUT_DIR get placeholders when unbound).
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from lumiere_jax import demo
from lumiere_jax import gin_cli
from lumiere_jax.data import vocab
from lumiere_jax.diffusion import augmentation
from lumiere_jax.diffusion import losses
from lumiere_jax.evaluate import upsampling
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.sample import applications
from lumiere_jax.sample import conditions
from lumiere_jax.sample import job
from lumiere_jax.sample import ssr as ssr_stage

LEVELS = (0.02, 0.1, 0.3, 0.6, 0.9)  # sampler times t of the SSR's own schedule
PLACEHOLDERS = ("BASE_CHECKPOINT='unused'", "PROMPTS='unused'", "OUTPUT_DIR='unused'")


def mean_psnr(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Mean over clips of the PSNR of `estimate` clipped to [-1, 1]; both `[N, T, H, W, 3]`."""
    return float(np.mean([upsampling.psnr(np.clip(e, -1, 1), t) for e, t in zip(estimate, truth)]))


def x0_psnr_by_level(num_clips: int, levels: tuple[float, ...], guidance_weights: tuple[float, ...],
                     seed: int = 0) -> dict:
    """PSNR (dB) of the SSR's x0 prediction per guidance weight and level, bilinear's, and `z / alpha`'s."""
    models, sampling, text, mesh = job.ModelsConfig(), applications.SamplingConfig(), job.TextConfig(), \
        mesh_lib.MeshConfig()
    adapter = models.sampled_ssr_adapter()
    frames, height = adapter.sample_shape[:2]
    truth = np.stack([conditions.to_unit_range(clip) for clip in demo.ground_truth_clips(
        height, demo.SSR_CLIP_FRAMES, frames, num_clips)])  # [N, T, H, W, 3]
    low_res = upsampling.area_downsample(truth, adapter.low_res_size)  # [N, T, h, w, 3]
    prompts = [combination.caption() for combination in demo.SCORED[:num_clips]]
    result = {"bilinear": mean_psnr(upsampling.bilinear_upsample(low_res, height), truth), "levels": {}}
    device_mesh = mesh.make_mesh()
    with mesh_lib.mesh_context(device_mesh, mesh.rules):
        stage = job.load_stage(adapter, models.ssr_checkpoint, models.use_ema, text, device_mesh, mesh.rules)
        tokens, mask = vocab.tokenize(prompts, vocab.get_vocabulary(text.sentencepiece_model), adapter.text_length)
        batch = {"ssr_tokens": jnp.asarray(tokens), "ssr_text_mask": jnp.asarray(mask)}
        schedule = models.ssr_diffusion.schedule_fn
        eps = jax.random.normal(jax.random.key(seed), truth.shape)

        @jax.jit
        def predict(t, weight):
            always = jnp.tile(jnp.array([-jnp.inf, jnp.inf], jnp.float32), (num_clips, 1))
            guide = applications.text_guidance(stage, batch, "ssr_", jnp.full((num_clips,), weight),
                                               jnp.zeros((num_clips,)), always)
            aug_logsnr = jnp.full((num_clips,), augmentation.AUGMENTATION_SCHEDULE(jnp.float32(0.0)))
            denoise_fn = ssr_stage.ssr_denoiser(stage, jnp.asarray(low_res), guide, aug_logsnr, sampling)
            logsnr = jnp.full((num_clips,), schedule(t))
            z = losses.noisy_sample(jnp.asarray(truth), eps, logsnr)
            return denoise_fn(z, logsnr), z / jnp.sqrt(jax.nn.sigmoid(logsnr[0]))

        for t in levels:
            row = {}
            for weight in guidance_weights:
                x0_hat, rescaled = (np.asarray(a) for a in predict(jnp.float32(t), jnp.float32(weight)))
                row[f"x0_w{weight:g}"] = mean_psnr(x0_hat, truth)
            row["z_over_alpha"] = mean_psnr(rescaled, truth)
            result["levels"][t] = row
    return result


def main(argv: list[str] | None = None) -> int:
    parser = gin_cli.argument_parser("benchmarks.ssr_noise_levels", __doc__.split("\n\n")[0], "")
    parser.add_argument("--clips", type=int, default=4, help="ground-truth clips (scored demo prompts)")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="sampler times t, comma-separated")
    parser.add_argument("--weights", default="1,3", help="SSR guidance weights, comma-separated")
    args = gin_cli.parse_args(parser, sys.argv[1:] if argv is None else argv, "sample/base.gin")
    args.gin_bindings = [*PLACEHOLDERS, *(args.gin_bindings or [])]
    gin_cli.parse_gin(args)
    gin_cli.finalize()
    result = x0_psnr_by_level(args.clips, tuple(map(float, args.levels.split(","))),
                              tuple(map(float, args.weights.split(","))))
    print(f"bilinear upsampling: {result['bilinear']:.2f} dB over {args.clips} clips")
    for t, row in result["levels"].items():
        print(f"t={t:<5g} " + "  ".join(f"{name} {value:6.2f} dB" for name, value in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
