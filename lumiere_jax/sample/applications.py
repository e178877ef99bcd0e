"""The paper's applications as jittable functions: base STUNet sampling of the whole clip (text-to-video,
image-to-video, inpainting, cinemagraphs through <J, C, M>; SDEdit from a noised input video) and SSR with
temporal MultiDiffusion (PAPER.md 1, 3, 4).

Randomness is per row: each row brings its own key (`keys: uint32 [B, 2]`, raw key data), from which its
initial noise and the noise of its SR conditioning augmentation are drawn, so a row's video does not depend
on the other rows of its batch. The step noise of stochastic samplers (ddpm, ddim with eta > 0) is drawn per
row from the row's key too (`samplers.sample` takes keys `[B]`), so a row's output is the same at any batch
size, shard count and position for every sampler.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gin
import jax
import jax.numpy as jnp

from lumiere_jax.diffusion import augmentation
from lumiere_jax.diffusion import guidance
from lumiere_jax.diffusion import losses
from lumiere_jax.diffusion import multidiffusion
from lumiere_jax.diffusion import samplers
from lumiere_jax.diffusion import schedules
from lumiere_jax.stages import adapter as adapter_lib
from lumiere_jax.stages import text as text_lib

Params = Any
BASE_STREAM, SSR_STREAM = 0, 1  # fold_in constants separating the base and SSR randomness of a row


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Sampler settings of a job; rows may override the settings rows.py lists (steps, sampler, guidance...).

    Attributes:
      num_steps: base sampler steps.
      guidance_weight: classifier-free guidance weight of the base stage (1 = no guidance).
      sampler: "ddim", "ddpm" or "dpmpp_2m" (DPM-Solver++(2M): about a third of DDIM's error at 10-25 steps).
      eta: DDIM stochasticity (0 = deterministic).
      time_spacing: "uniform" or "quadratic" time grid; None: the sampler's default (`samplers.default_spacing`).
      negative_prompt: prompt of the unconditional branch of guidance ("" = the null text, as trained).
      guidance_rescale: phi of guidance rescale (Lin et al. 2024); 0 = off.
      guidance_interval: `(t_low, t_high)`: guidance only at times of the base schedule inside it ((0, 1) = always).
      num_frames: base clip length; None = the model's. Longer clips run the base over windows of the model's
        length fused by MultiDiffusion (our extension; the paper fuses windows of the SSR only).
      base_window_stride: window stride of such clips (None: half the model's length).
      base_window_weights: "uniform" (the paper's plain average over windows) or "triangular" (each window's
        frames weighted by their distance from its ends, `multidiffusion.window_weights`; our option).
      context_frames: frames of the previous clip an "extend" row continues from (1 = the image-to-video task).
      threshold_percentile: dynamic thresholding percentile (Imagen: 99.5); None disables it.
      sdedit_strength: SDEdit noise level t0 in (0, 1]: the input video is noised to t0, then denoised.
      replace_known: after every denoiser call, overwrite x0_hat with C where M = 1 (RePaint-style hard
        constraint, our option), in the base stage and, with C and M upsampled, in the SSR. Off by default: the
        paper relies on the fine-tuned <J, C, M> model alone.
      ssr_num_steps: SSR sampler steps.
      ssr_guidance_weight: guidance weight of the SSR stage.
      ssr_window_length: MultiDiffusion window T' (None: the SSR model's frame count).
      ssr_window_stride: window stride (None: half the window, i.e. 50% overlap; our choice).
      ssr_noise_aug_t: noise conditioning augmentation level of the low-res input, as a time of the
        augmentation's own schedule (plain cosine, `diffusion.augmentation`), as in training.
    """

    num_steps: int = 64
    guidance_weight: float = 5.0
    sampler: str = "ddim"
    eta: float = 0.0
    threshold_percentile: float | None = 99.5
    sdedit_strength: float = 0.6
    replace_known: bool = False
    ssr_num_steps: int = 32
    ssr_guidance_weight: float = 3.0
    ssr_window_length: int | None = None
    ssr_window_stride: int | None = None
    ssr_noise_aug_t: float = 0.0
    time_spacing: str | None = None
    negative_prompt: str = ""
    guidance_rescale: float = 0.0
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    num_frames: int | None = None
    base_window_stride: int | None = None
    base_window_weights: str = "uniform"
    context_frames: int = 1

    def __post_init__(self):
        if self.sampler not in samplers.SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose one of {samplers.SAMPLERS}")
        if self.time_spacing is not None and self.time_spacing not in samplers.TIME_SPACINGS:
            raise ValueError(f"unknown time_spacing {self.time_spacing!r}; choose one of {samplers.TIME_SPACINGS}")
        check_guidance_controls(self.guidance_rescale, self.guidance_interval, "SamplingConfig")
        if self.num_steps < 1 or self.ssr_num_steps < 1:
            raise ValueError(f"num_steps={self.num_steps} and ssr_num_steps={self.ssr_num_steps} must be >= 1")
        if not 0.0 < self.sdedit_strength <= 1.0:
            raise ValueError(f"sdedit_strength={self.sdedit_strength} must lie in (0, 1]")
        if self.base_window_weights not in multidiffusion.WINDOW_WEIGHTINGS:
            raise ValueError(f"unknown base_window_weights {self.base_window_weights!r}; choose one of "
                             f"{multidiffusion.WINDOW_WEIGHTINGS}")


def check_guidance_controls(rescale: float, interval: tuple[float, float], where: str) -> None:
    """Raises a ValueError naming `where` unless `0 <= rescale <= 1` and `0 <= t_low < t_high <= 1`."""
    if not 0.0 <= rescale <= 1.0:
        raise ValueError(f"{where}: guidance_rescale={rescale} must lie in [0, 1] (Lin et al. suggest 0.7)")
    low, high = interval
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"{where}: guidance_interval={tuple(interval)} must be (t_low, t_high) with "
                         "0 <= t_low < t_high <= 1, times of the sampling schedule (1 = pure noise)")


@dataclasses.dataclass(frozen=True)
class StaticSettings:
    """The settings fixed at compile time: rows of a job are grouped by them, one compiled sampler each."""

    num_steps: int
    t_start: float = 1.0
    sampler: str = "ddim"
    num_frames: int | None = None  # None: the base model's frame count


@dataclasses.dataclass(frozen=True)
class Stage:
    """A loaded model: its adapter (module, text encoder, stage, parameterisation) and weights."""

    adapter: adapter_lib.ModelAdapter
    params: Params
    text_encoder_params: Params


def row_keys(key_data: jax.Array, stream: int, count: int) -> jax.Array:
    """`key_data: uint32 [B, 2]` -> `count` independent keys per row for one use (`stream`): `[count, B]`."""
    keys = jax.random.wrap_key_data(key_data)
    return jax.vmap(lambda key: jax.random.split(jax.random.fold_in(key, stream), count), out_axes=1)(keys)


def row_normal(keys: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """One standard normal sample of `shape` per key: `[B, *shape]`."""
    return jax.vmap(lambda key: jax.random.normal(key, shape, jnp.float32))(keys)


def per_row_weight(weight: jax.Array, ndim: int) -> jax.Array:
    """Guidance weights `[B]` shaped to broadcast against `[B, ...]` predictions of rank `ndim`."""
    return weight.astype(jnp.float32).reshape((-1,) + (1,) * (ndim - 1))


@dataclasses.dataclass(frozen=True)
class TextGuidance:
    """Per-row text conditions and guidance controls of one stage; rows may be MultiDiffusion windows.

    The negative text is the unconditional branch's: a negative prompt's embeddings, or zeros with an
    all-False mask (the null text of training) for rows without one.
    """

    embeddings: jax.Array  # [B, L, D]
    mask: jax.Array  # bool [B, L]
    negative_embeddings: jax.Array  # [B, L, D]
    negative_mask: jax.Array  # bool [B, L]
    weight: jax.Array  # [B]
    rescale: jax.Array  # [B]
    logsnr_interval: jax.Array  # [B, 2]: guidance on where low <= logsnr <= high

    def repeat(self, num_windows: int) -> TextGuidance:
        """The same rows repeated for the window batch `[B * N, ...]` (multidiffusion's layout)."""
        return TextGuidance(*(multidiffusion.repeat_for_windows(getattr(self, field.name), num_windows)
                              for field in dataclasses.fields(self)))

    def denoiser(self, model_fn: guidance.ModelFn, shared: dict[str, Any], parameterization: str,
                 rank: int) -> samplers.Denoiser:
        """Guided, unthresholded `denoise_fn` of `model_fn(z, logsnr, cond)`; `shared` goes to both halves."""
        cond = {"text_embeddings": self.embeddings, "text_mask": self.mask, **shared}
        null_cond = {"text_embeddings": self.negative_embeddings, "text_mask": self.negative_mask, **shared}
        return guidance.guided_denoiser(model_fn, cond, null_cond, per_row_weight(self.weight, rank),
                                        parameterization, threshold_percentile=None, rescale=self.rescale,
                                        logsnr_interval=self.logsnr_interval)


def text_guidance(stage: Stage, batch: dict[str, jax.Array], prefix: str, weight: jax.Array, rescale: jax.Array,
                  logsnr_interval: jax.Array) -> TextGuidance:
    """Encodes `batch[prefix + "tokens"]` and, when given, the negative prompts `prefix + "negative_tokens"`
    (rows without one have an all-False `negative_text_mask`, which encodes to the null text)."""
    embeddings, mask = text_lib.encode_text(stage.adapter, stage.text_encoder_params, batch[prefix + "tokens"],
                                            batch[prefix + "text_mask"])
    if prefix + "negative_tokens" in batch:
        negative, negative_mask = text_lib.encode_text(stage.adapter, stage.text_encoder_params,
                                                       batch[prefix + "negative_tokens"],
                                                       batch[prefix + "negative_text_mask"])
    else:
        negative, negative_mask = text_lib.null_text(embeddings, mask)
    return TextGuidance(embeddings, mask, negative, negative_mask, weight, rescale, logsnr_interval)


def base_guidance(stage: Stage, batch: dict[str, jax.Array], schedule: schedules.Schedule,
                  config: SamplingConfig) -> TextGuidance:
    """The base stage's text and per-row controls: `guidance_weight: [B]`, and optionally
    `guidance_rescale: [B]` and `guidance_interval: [B, 2]` (times) in `batch`, else the job's."""
    batch_size = batch["tokens"].shape[0]
    rescale = batch.get("guidance_rescale", jnp.full((batch_size,), config.guidance_rescale, jnp.float32))
    interval = batch.get("guidance_interval", jnp.tile(jnp.asarray(config.guidance_interval, jnp.float32),
                                                       (batch_size, 1)))
    logsnr_interval = schedule(interval)[:, ::-1]  # t_high -> the low log-SNR
    return text_guidance(stage, batch, "", batch["guidance_weight"], rescale, logsnr_interval)


def base_denoiser(
    stage: Stage,
    text: TextGuidance,
    condition: jax.Array | None,
    condition_mask: jax.Array | None,
    config: SamplingConfig,
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
        denoise_fn = text.denoiser(model_fn, {"channel_condition": channel_condition}, adapter.parameterization, 5)
    else:
        starts = base_windows(model_frames, num_frames, config)
        window_text = text.repeat(len(starts))

        def windowed_denoise_fn(z_windows, logsnr_windows, condition_windows):
            return window_text.denoiser(model_fn, {"channel_condition": condition_windows},
                                        adapter.parameterization, 5)(z_windows, logsnr_windows)

        weights = multidiffusion.window_weights(config.base_window_weights, len(starts), model_frames)
        denoise_fn = multidiffusion.multidiffusion_denoiser(windowed_denoise_fn, starts, model_frames, weights,
                                                            frame_condition=channel_condition)
    denoise_fn = guidance.thresholded(denoise_fn, config.threshold_percentile)
    if not config.replace_known or condition is None:
        return denoise_fn
    return known_content_denoiser(denoise_fn, condition, condition_mask)


def known_content_denoiser(denoise_fn: samplers.Denoiser, condition: jax.Array,
                           condition_mask: jax.Array) -> samplers.Denoiser:
    """`replace_known`: x0_hat takes `condition: [B, T, H, W, 3]` wherever `condition_mask: [B, T, H, W, 1]` is 1."""

    def replace_known(z, logsnr):
        return condition_mask * condition + (1.0 - condition_mask) * denoise_fn(z, logsnr)

    return replace_known


def known_content_at(condition: jax.Array, condition_mask: jax.Array, height: int,
                     width: int) -> tuple[jax.Array, jax.Array]:
    """The base stage's C and M at the SSR's frame size: C bilinear, M nearest (stays binary). Our choice: the
    SSR keeps the upsampled given content, as the job reads condition files at the base size only."""
    batch_size, num_frames = condition.shape[:2]
    return (jax.image.resize(condition, (batch_size, num_frames, height, width, 3), "linear"),
            jax.image.resize(condition_mask, (batch_size, num_frames, height, width, 1), "nearest"))


def base_windows(model_frames: int, num_frames: int, config: SamplingConfig) -> tuple[int, ...]:
    """MultiDiffusion window starts of a base clip longer than the model (windows of the model's length)."""
    if num_frames < model_frames:
        raise ValueError(f"num_frames={num_frames} is shorter than the base model's {model_frames} frames; sample "
                         f"at least {model_frames} frames (and trim), or use a model trained on shorter clips")
    stride = config.base_window_stride or max(model_frames // 2, 1)
    return multidiffusion.window_starts(num_frames, model_frames, stride)


def generate_base(
    stage: Stage,
    batch: dict[str, jax.Array],
    schedule: schedules.Schedule,
    config: SamplingConfig,
    num_steps: int,
    t_start: float = 1.0,
    settings: StaticSettings | None = None,
) -> jax.Array:
    """Samples whole clips with the base model: `[B, T, H, W, 3]` in [-1, 1].

    `batch`: `tokens: int32 [B, L]`, `text_mask: bool [B, L]`, `keys: uint32 [B, 2]`, `guidance_weight: [B]`;
    optionally `negative_tokens`, `negative_text_mask`, `guidance_rescale: [B]`, `guidance_interval: [B, 2]`;
    conditional models also `condition`, `condition_mask`; SDEdit (`t_start < 1`) needs `init_video:
    [B, T, H, W, 3]`, noised to `t_start` with the row's noise (PAPER.md 4, SDEdit). `settings` (static)
    overrides the sampler and the clip length (default: the config's sampler, the model's length).
    """
    settings = settings or StaticSettings(num_steps, t_start, config.sampler, config.num_frames)
    adapter = stage.adapter
    num_frames = settings.num_frames or adapter.sample_shape[0]
    text = base_guidance(stage, batch, schedule, config)
    noise_keys, sampler_keys = row_keys(batch["keys"], BASE_STREAM, 2)
    noise = row_normal(noise_keys, (num_frames,) + tuple(adapter.sample_shape[1:]))
    if settings.t_start < 1.0:
        z_init = losses.noisy_sample(batch["init_video"], noise, schedule(jnp.float32(settings.t_start)))
    else:
        z_init = noise
    denoise_fn = base_denoiser(stage, text, batch.get("condition"), batch.get("condition_mask"), config, num_frames)
    return samplers.sample(denoise_fn, sampler_keys, z_init, schedule, settings.num_steps, settings.t_start,
                           settings.sampler, config.eta, clip_output=True, spacing=config.time_spacing)


def ssr_windows(stage: Stage, num_frames: int, config: SamplingConfig) -> tuple[tuple[int, ...], int]:
    """MultiDiffusion window starts and length for a clip of `num_frames` (PAPER.md 3)."""
    window_length = min(config.ssr_window_length or stage.adapter.sample_shape[0], num_frames)
    stride = config.ssr_window_stride or max(window_length // 2, 1)
    return multidiffusion.window_starts(num_frames, window_length, stride), window_length


def ssr_denoiser(
    stage: Stage,
    low_res: jax.Array,
    text: TextGuidance,
    aug_logsnr: jax.Array,
    config: SamplingConfig,
) -> samplers.Denoiser:
    """Whole-clip `denoise_fn(z: [B, T, H, W, 3], logsnr: [B]) -> x0_hat` of the SSR with temporal MultiDiffusion.

    `low_res: [B, T, h, w, 3]` already noise-augmented (level `aug_logsnr: [B]`). Order (PAPER.md 3 with
    Imagen's thresholding): classifier-free guidance per window, fusion of the raw guided x0 predictions of
    all windows, then dynamic thresholding of the fused clip, so overlapping frames average predictions on one
    scale and each clip gets one percentile.
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

    def windowed_denoise_fn(z_windows, logsnr_windows, low_res_windows):
        shared = {"low_res": low_res_windows, "noise_aug_logsnr": window_aug_logsnr}
        return window_text.denoiser(model_fn, shared, adapter.parameterization, 5)(z_windows, logsnr_windows)

    fused = multidiffusion.multidiffusion_denoiser(windowed_denoise_fn, starts, window_length,
                                                   frame_condition=low_res)
    return guidance.thresholded(fused, config.threshold_percentile)


def upsample_ssr(
    stage: Stage,
    low_res: jax.Array,
    batch: dict[str, jax.Array],
    schedule: schedules.Schedule,
    config: SamplingConfig,
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
    text = text_guidance(stage, batch, "ssr_", jnp.full((batch_size,), config.ssr_guidance_weight, jnp.float32),
                         jnp.zeros((batch_size,), jnp.float32), always)
    sampler_keys, aug_keys, noise_keys = row_keys(batch["keys"], SSR_STREAM, 3)
    aug_level = augmentation.AUGMENTATION_SCHEDULE(jnp.float32(config.ssr_noise_aug_t))  # not the SR's schedule
    aug_logsnr = jnp.full((batch_size,), aug_level, jnp.float32)
    low_res = losses.noisy_sample(low_res, row_normal(aug_keys, low_res.shape[1:]), aug_logsnr)
    denoise_fn = ssr_denoiser(stage, low_res, text, aug_logsnr, config)
    if config.replace_known and "condition" in batch:
        denoise_fn = known_content_denoiser(
            denoise_fn, *known_content_at(batch["condition"], batch["condition_mask"], height, width))
    z_init = row_normal(noise_keys, (num_frames, height, width, 3))
    return samplers.sample(denoise_fn, sampler_keys, z_init, schedule, config.ssr_num_steps, 1.0,
                           config.sampler, config.eta, clip_output=True, spacing=config.time_spacing)
