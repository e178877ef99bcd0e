"""The spatial super-resolution stage at sampling time (PAPER.md 1, 3): the inflated SR model upsamples the
base clip over overlapping temporal windows fused by MultiDiffusion at every denoising step, conditioned on
the noise-augmented low-res clip (Imagen's noise conditioning augmentation, on its own plain cosine schedule).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lumiere_jax.diffusion import augmentation
from lumiere_jax.diffusion import guidance
from lumiere_jax.diffusion import losses
from lumiere_jax.diffusion import multidiffusion
from lumiere_jax.diffusion import samplers
from lumiere_jax.diffusion import schedules
from lumiere_jax.sample import applications
from lumiere_jax.stages import adapter as adapter_lib


def ssr_windows(stage: applications.Stage, num_frames: int,
                config: applications.SamplingConfig) -> tuple[tuple[int, ...], int]:
    """MultiDiffusion window starts and length for a clip of `num_frames` (PAPER.md 3)."""
    window_length = min(config.ssr_window_length or stage.adapter.sample_shape[0], num_frames)
    stride = config.ssr_window_stride or max(window_length // 2, 1)
    return multidiffusion.window_starts(num_frames, window_length, stride), window_length


def ssr_denoiser(
    stage: applications.Stage,
    low_res: jax.Array,
    text: applications.TextGuidance,
    aug_logsnr: jax.Array,
    config: applications.SamplingConfig,
) -> samplers.Denoiser:
    """Whole-clip `denoise_fn(z: [B, T, H, W, 3], logsnr: [B]) -> x0_hat` of the SSR with temporal MultiDiffusion.

    `low_res: [B, T, h, w, 3]` already noise-augmented (level `aug_logsnr: [B]`). Order (PAPER.md 3 with
    Imagen's thresholding): classifier-free guidance per window, fusion of the raw guided x0 predictions of
    all windows, then dynamic thresholding of the fused clip, so overlapping frames average predictions on one
    scale and each clip gets one percentile. The windows go through the model `config.ssr_windows_per_call`
    per clip at a time (`multidiffusion.map_window_chunks`), which bounds memory and leaves the result as is.
    """
    adapter = stage.adapter
    num_frames = low_res.shape[1]
    starts, window_length = ssr_windows(stage, num_frames, config)
    window_text = text.repeat(len(starts))
    window_aug_logsnr = multidiffusion.repeat_for_windows(aug_logsnr, len(starts))

    def model_fn(z, logsnr, c):
        inputs = adapter_lib.ModelInputs(x0=z, low_res=c["low_res"])
        return adapter.apply(stage.params, z, logsnr, inputs, c["text_embeddings"], c["text_mask"],
                             c["noise_aug_logsnr"], train=False)

    def denoise_windows(z_windows, logsnr_windows, low_res_windows, text_windows, aug_logsnr_windows):
        shared = {"low_res": low_res_windows, "noise_aug_logsnr": aug_logsnr_windows}
        return text_windows.denoiser(model_fn, shared, adapter.parameterization, 5, config.ssr_guidance_sequential,
                                     adapter.learned_variance)(z_windows, logsnr_windows)

    def windowed_denoise_fn(z_windows, logsnr_windows, low_res_windows):
        return multidiffusion.map_window_chunks(denoise_windows, len(starts), config.ssr_windows_per_call,
                                                z_windows, logsnr_windows, low_res_windows, window_text,
                                                window_aug_logsnr)

    fused = multidiffusion.multidiffusion_denoiser(windowed_denoise_fn, starts, window_length,
                                                   frame_condition=low_res)
    return guidance.thresholded(fused, config.threshold_percentile, config.threshold_max_scale)


def known_content_at(condition: jax.Array, condition_mask: jax.Array, height: int,
                     width: int) -> tuple[jax.Array, jax.Array]:
    """The base stage's C and M at the SSR's frame size: C bilinear, M nearest (stays binary). Our choice: the
    SSR keeps the upsampled given content, as the job reads condition files at the base size only."""
    batch_size, num_frames = condition.shape[:2]
    return (jax.image.resize(condition, (batch_size, num_frames, height, width, 3), "linear"),
            jax.image.resize(condition_mask, (batch_size, num_frames, height, width, 1), "nearest"))


def upsample_ssr(
    stage: applications.Stage,
    low_res: jax.Array,
    batch: dict[str, jax.Array],
    schedule: schedules.Schedule,
    config: applications.SamplingConfig,
) -> jax.Array:
    """SSR of the whole clip with temporal MultiDiffusion: `low_res: [B, T, h, w, 3]` -> `[B, T, H, W, 3]`.

    Base frames of another size than the SSR model's `low_res_size` are resized to it first. The low-res clip
    is noise-augmented once (row noise, level `ssr_noise_aug_t`) before windowing; the denoiser is
    `ssr_denoiser` (guide per window, fuse, threshold), and the step noise is drawn once for the whole clip.
    The SSR guides with the job's `ssr_guidance_weight` and the rows' negative prompts (`ssr_negative_*`),
    without rescale or interval. With `replace_known`, a conditional batch's C and M (at the base size) are
    upsampled (`known_content_at`) and kept as in the base stage.
    """
    adapter = stage.adapter
    batch_size, num_frames = low_res.shape[:2]
    height, width = adapter.sample_shape[1:3]
    if low_res.shape[2:4] != (adapter.low_res_size,) * 2:
        # The SSR model was trained on inputs of low_res_size: bring the base frames to that size first.
        low_res = jax.image.resize(low_res, (batch_size, num_frames, adapter.low_res_size, adapter.low_res_size, 3),
                                   "linear")
    always = jnp.tile(jnp.array([-jnp.inf, jnp.inf], jnp.float32), (batch_size, 1))
    weight = jnp.full((batch_size,), config.ssr_guidance_weight, jnp.float32)
    text = applications.text_guidance(stage, batch, "ssr_", weight, jnp.zeros((batch_size,), jnp.float32), always)
    sampler_keys, aug_keys, noise_keys = applications.row_keys(batch["keys"], applications.SSR_STREAM, 3)
    aug_level = augmentation.AUGMENTATION_SCHEDULE(jnp.float32(config.ssr_noise_aug_t))  # not the SR's schedule
    aug_logsnr = jnp.full((batch_size,), aug_level, jnp.float32)
    low_res = losses.noisy_sample(low_res, applications.row_normal(aug_keys, low_res.shape[1:]), aug_logsnr)
    denoise_fn = ssr_denoiser(stage, low_res, text, aug_logsnr, config)
    if config.replace_known and "condition" in batch:
        denoise_fn = applications.known_content_denoiser(
            denoise_fn, *known_content_at(batch["condition"], batch["condition_mask"], height, width))
    z_init = applications.row_normal(noise_keys, (num_frames, height, width, 3))
    return samplers.sample(denoise_fn, sampler_keys, z_init, schedule, config.ssr_num_steps, 1.0,
                           config.sampler, config.eta, clip_output=True, spacing=config.time_spacing)
