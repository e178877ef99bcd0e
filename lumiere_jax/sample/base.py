"""The base stage at sampling time (PAPER.md 1, 2, 4): the STUNet (or the conditional <J, C, M> model)
generates the whole clip in one pass; text-to-video, image-to-video, inpainting, cinemagraphs and video
extension through C and M, SDEdit from a noised input video. Clips longer than the model run as windows of its
length fused by MultiDiffusion at every step (our extension; the paper fuses SSR windows only).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lumiere_jax.diffusion import guidance
from lumiere_jax.diffusion import losses
from lumiere_jax.diffusion import multidiffusion
from lumiere_jax.diffusion import samplers
from lumiere_jax.diffusion import schedules
from lumiere_jax.sample import applications
from lumiere_jax.stages import adapter as adapter_lib


def base_guidance(stage: applications.Stage, batch: dict[str, jax.Array], schedule: schedules.Schedule,
                  config: applications.SamplingConfig) -> applications.TextGuidance:
    """The base stage's text and per-row controls: `guidance_weight: [B]`, and optionally
    `guidance_rescale: [B]` and `guidance_interval: [B, 2]` (times) in `batch`, else the job's."""
    batch_size = batch["tokens"].shape[0]
    rescale = batch.get("guidance_rescale", jnp.full((batch_size,), config.guidance_rescale, jnp.float32))
    interval = batch.get("guidance_interval", jnp.tile(jnp.asarray(config.guidance_interval, jnp.float32),
                                                       (batch_size, 1)))
    logsnr_interval = schedule(interval)[:, ::-1]  # t_high -> the low log-SNR
    return applications.text_guidance(stage, batch, "", batch["guidance_weight"], rescale, logsnr_interval)


def base_denoiser(
    stage: applications.Stage,
    text: applications.TextGuidance,
    condition: jax.Array | None,
    condition_mask: jax.Array | None,
    config: applications.SamplingConfig,
    num_frames: int,
) -> samplers.Denoiser:
    """Guided `denoise_fn(z, logsnr) -> x0_hat` of the base model for a batch of clips of `num_frames`.

    `condition: [B, T, H, W, 3]`, `condition_mask: [B, T, H, W, 1]` (conditional models only) are appended to z
    on channels exactly as the trainer does (`adapter.channel_condition`, PAPER.md 4.2). Clips longer
    than the model run as windows of its length fused by MultiDiffusion, in the SSR's order: guide per
    window, fuse the raw x0, threshold the fused clip.
    """
    adapter = stage.adapter
    channel_condition = None
    if adapter.stage == "conditional":  # [B, T, H, W, 4] = <C * M, M>, as the trainer builds it
        channel_condition = adapter_lib.channel_condition(condition, condition_mask)

    def model_fn(z, logsnr, cond):
        inputs = adapter_lib.ModelInputs(x0=z, channel_condition=cond["channel_condition"])
        return adapter.apply(stage.params, z, logsnr, inputs, cond["text_embeddings"], cond["text_mask"],
                             None, train=False)

    model_frames = adapter.sample_shape[0]
    if num_frames == model_frames:
        denoise_fn = text.denoiser(model_fn, {"channel_condition": channel_condition}, adapter.parameterization, 5,
                                   learned_variance=adapter.learned_variance)
    else:
        starts = base_windows(model_frames, num_frames, config)
        window_text = text.repeat(len(starts))

        def windowed_denoise_fn(z_windows, logsnr_windows, condition_windows):
            return window_text.denoiser(model_fn, {"channel_condition": condition_windows}, adapter.parameterization,
                                        5, learned_variance=adapter.learned_variance)(z_windows, logsnr_windows)

        weights = multidiffusion.window_weights(config.base_window_weights, len(starts), model_frames)
        denoise_fn = multidiffusion.multidiffusion_denoiser(windowed_denoise_fn, starts, model_frames, weights,
                                                            frame_condition=channel_condition)
    denoise_fn = guidance.thresholded(denoise_fn, config.threshold_percentile, config.threshold_max_scale)
    if not config.replace_known or condition is None:
        return denoise_fn
    return applications.known_content_denoiser(denoise_fn, condition, condition_mask)


def base_windows(model_frames: int, num_frames: int, config: applications.SamplingConfig) -> tuple[int, ...]:
    """MultiDiffusion window starts of a base clip longer than the model (windows of the model's length)."""
    if num_frames < model_frames:
        raise ValueError(f"num_frames={num_frames} is shorter than the base model's {model_frames} frames; sample "
                         f"at least {model_frames} frames (and trim), or use a model trained on shorter clips")
    stride = config.base_window_stride or max(model_frames // 2, 1)
    return multidiffusion.window_starts(num_frames, model_frames, stride)


def generate_base(
    stage: applications.Stage,
    batch: dict[str, jax.Array],
    schedule: schedules.Schedule,
    config: applications.SamplingConfig,
    num_steps: int,
    t_start: float = 1.0,
    settings: applications.StaticSettings | None = None,
) -> jax.Array:
    """Samples whole clips with the base model: `[B, T, H, W, 3]` in [-1, 1].

    `batch`: `tokens: int32 [B, L]`, `text_mask: bool [B, L]`, `keys: uint32 [B, 2]`, `guidance_weight: [B]`;
    optionally `negative_tokens`, `negative_text_mask`, `guidance_rescale: [B]`, `guidance_interval: [B, 2]`;
    conditional models also `condition`, `condition_mask`; SDEdit (`t_start < 1`) needs `init_video:
    [B, T, H, W, 3]`, noised to `t_start` with the row's noise (PAPER.md 4, SDEdit). `settings` (static)
    overrides the sampler and the clip length (default: the config's sampler, the model's length).
    """
    settings = settings or applications.StaticSettings(num_steps, t_start, config.sampler, config.num_frames)
    adapter = stage.adapter
    num_frames = settings.num_frames or adapter.sample_shape[0]
    text = base_guidance(stage, batch, schedule, config)
    noise_keys, sampler_keys = applications.row_keys(batch["keys"], applications.BASE_STREAM, 2)
    noise = applications.row_normal(noise_keys, (num_frames,) + tuple(adapter.sample_shape[1:]))
    if settings.t_start < 1.0:
        z_init = losses.noisy_sample(batch["init_video"], noise, schedule(jnp.float32(settings.t_start)))
    else:
        z_init = noise
    denoise_fn = base_denoiser(stage, text, batch.get("condition"), batch.get("condition_mask"), config, num_frames)
    return samplers.sample(denoise_fn, sampler_keys, z_init, schedule, settings.num_steps, settings.t_start,
                           settings.sampler, config.eta, clip_output=True, spacing=config.time_spacing)
