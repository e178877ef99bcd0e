"""DeepFloyd IF as a stage of ours: the IF U-Net behind our model call, its adapter (gin entry point), and the
import of a downloaded IF directory as a checkpoint runs can initialise from.

Our choice of parameterisation (diffusion/discrete.py says why): the inflated IF model keeps IF's own one.
`IFDenoiser` takes our call (`x, logsnr, text_embeddings, text_mask, low_res, noise_aug_logsnr, train`), turns
the log-SNRs into IF's (fractional) timesteps on IF's squared-cosine table, and returns the eps channels, so the
trainer's eps-loss and our samplers work unchanged under the "if_squared_cosine" schedule (`DiffusionConfig`).
The model returns IF's whole output, eps and the learned-range variance interpolation (`ModelAdapter.
learned_variance`): the trainer's eps-loss reads the eps channels, so the variance channels stay as imported,
and the sampling job's ancestral sampler ("ddpm", sample/if.gin) steps with them (`samplers.LearnedVariance`).

Two commands from a downloaded IF directory to a trained STUNet (README):
  python -m lumiere_jax.stages.if_stage --if_dir=IF-I-XL-v1.0 --output_dir=$RUNS/if_i_xl
  python -m lumiere_jax.train --gin_file=runs/train_stunet_from_if.gin --gin.MODEL_DIR=$RUNS/stunet_if \
      --gin.IF_DIR=IF-I-XL-v1.0 --gin.IF_CHECKPOINT=$RUNS/if_i_xl --gin.T5_DIR=IF-I-XL-v1.0/text_encoder
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import gin
import orbax.checkpoint as ocp

from lumiere_jax import storage
from lumiere_jax.diffusion import discrete, schedules
from lumiere_jax.models import if_weights, t5
from lumiere_jax.models.config import TemporalConfig
from lumiere_jax.models.if_unet import IFUNet
from lumiere_jax.stages import adapter as adapter_lib
from lumiere_jax.stages import checkpoint_layout
from lumiere_jax.stages.factory import pattern_mask

IF_STAGES = {"if_stunet": "stunet", "if_ssr": "ssr"}
IMPORTED_STEP = 0


class IFDenoiser(IFUNet):
    """`IFUNet` under our model call (docs/ARCHITECTURE.md): log-SNR in; out `[B, (T,) H, W, 6]`, eps and the
    learned-range variance interpolation (IF's `out_channels`; 3 for a model without a learned variance).

    A subclass, not a wrapper, so that parameter paths stay those of `IFUNet` (and of the imported checkpoint).
    """

    def __call__(self, x, logsnr, text_embeddings, text_mask, low_res=None, noise_aug_logsnr=None, train=False):
        alphas_cumprod = schedules.squared_cosine_alphas_cumprod()
        timesteps = discrete.timestep_from_logsnr(logsnr, alphas_cumprod)
        noise_level = None
        if noise_aug_logsnr is not None:
            noise_level = discrete.timestep_from_logsnr(noise_aug_logsnr, alphas_cumprod)
        return super().__call__(x, timesteps, text_embeddings, text_mask, low_res, noise_level, train)


@gin.configurable
def if_adapter(
    stage: str = gin.REQUIRED,
    if_dir: str = gin.REQUIRED,
    temporal: TemporalConfig = gin.REQUIRED,
    text_encoder_preset: str = "t5_v1_1_xxl",
    text_length: int = 77,
    trainable_patterns: Sequence[str] | None = (".*temporal.*",),
    dtype: str | None = None,
    remat: bool | None = None,
) -> adapter_lib.ModelAdapter:
    """A `ModelAdapter` for the IF U-Net downloaded to `if_dir` (only its unet/config.json is read here) inflated
    with `temporal`: stage "if_stunet" (IF stage I -> STUNet on clips) or "if_ssr" (IF stage II -> SSR on windows).
    IF's text length is 77 T5 tokens; the spatial (IF) layers stay frozen unless `trainable_patterns` says so."""
    if stage not in IF_STAGES:
        raise ValueError(f"unknown IF stage {stage!r}; choose one of {sorted(IF_STAGES)}")
    overrides = {name: value for name, value in (("dtype", dtype), ("remat", remat)) if value is not None}
    config = if_weights.read_config(if_dir, temporal=temporal, text_length=text_length, **overrides)
    if (stage == "if_ssr") != config.noise_level_conditioning:
        raise ValueError(f"stage {stage!r} needs IF stage {'II' if stage == 'if_ssr' else 'I'} weights; "
                         f"{if_dir!r} holds a stage {'II' if config.noise_level_conditioning else 'I'} U-Net")
    text_encoder = t5.TextEncoder(t5.get_config(text_encoder_preset))
    if text_encoder.config.d_model != config.text_embed_dim:
        raise ValueError(f"text encoder {text_encoder_preset!r} has d_model={text_encoder.config.d_model} but the IF "
                         f"U-Net reads {config.text_embed_dim}-wide text (IF: T5-XXL, 't5_v1_1_xxl')")
    sample_shape = (temporal.num_frames, config.image_size, config.image_size, 3)
    return adapter_lib.ModelAdapter(
        name=f"if_{stage}", module=IFDenoiser(config), stage=IF_STAGES[stage], text_encoder=text_encoder,
        sample_shape=sample_shape, low_res_size=config.low_res_size, text_length=text_length,
        trainable_mask=pattern_mask(trainable_patterns) if trainable_patterns is not None else None,
        window_frames=temporal.num_frames, parameterization="eps",
        learned_variance=config.out_channels == 6)


def import_if_checkpoint(if_dir: str, output_dir: str, param_dtype: str = "float32") -> str:
    """Writes the IF U-Net of `if_dir` as step 0 of `output_dir/checkpoints` (frozen parameters only), the
    `CheckpointConfig.init_from` of the IF run files. Returns the step directory."""
    _, params = if_weights.load_if_unet(if_dir, param_dtype=param_dtype)
    step_dir = storage.join(output_dir, checkpoint_layout.CHECKPOINTS_SUBDIR, str(IMPORTED_STEP))
    ocp.PyTreeCheckpointer().save(storage.join(step_dir, "state"), {"frozen_params": params})
    return step_dir


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Import a downloaded DeepFloyd IF U-Net (diffusers layout) as a "
                                     "checkpoint the IF run files initialise from.")
    parser.add_argument("--if_dir", required=True, help="the IF model directory (or its unet/), downloaded by you")
    parser.add_argument("--output_dir", required=True, help="where the checkpoint goes (local or gs://)")
    parser.add_argument("--param_dtype", default="float32")
    args = parser.parse_args(argv)
    step_dir = import_if_checkpoint(args.if_dir, args.output_dir, args.param_dtype)
    print(f"imported the IF U-Net of {args.if_dir} to {step_dir}: pass --gin.IF_CHECKPOINT={args.output_dir}")


if __name__ == "__main__":
    main()
