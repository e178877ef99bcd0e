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
from lumiere_jax.train import adapter as adapter_lib

Params = Any
BASE_STREAM, SSR_STREAM = 0, 1  # fold_in constants separating the base and SSR randomness of a row


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Sampler settings of a job; rows may override `num_steps`, `guidance_weight` and `sdedit_strength`.

    Attributes:
      num_steps: base sampler steps.
      guidance_weight: classifier-free guidance weight of the base stage (1 = no guidance).
      sampler: "ddim" or "ddpm".
      eta: DDIM stochasticity (0 = deterministic).
      threshold_percentile: dynamic thresholding percentile (Imagen: 99.5); None disables it.
      sdedit_strength: SDEdit noise level t0 in (0, 1]: the input video is noised to t0, then denoised.
      replace_known: after every denoiser call, overwrite x0_hat with C where M = 1 (RePaint-style hard
        constraint, our option). Off by default: the paper relies on the fine-tuned <J, C, M> model alone.
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

    def __post_init__(self):
        if self.sampler not in samplers.SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose one of {samplers.SAMPLERS}")
        if self.num_steps < 1 or self.ssr_num_steps < 1:
            raise ValueError(f"num_steps={self.num_steps} and ssr_num_steps={self.ssr_num_steps} must be >= 1")
        if not 0.0 < self.sdedit_strength <= 1.0:
            raise ValueError(f"sdedit_strength={self.sdedit_strength} must lie in (0, 1]")


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


def encode_text(adapter: adapter_lib.ModelAdapter, text_encoder_params: Params, tokens: jax.Array,
                text_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Frozen T5 embeddings `[B, L, D]` (zero at padding) and the mask `[B, L]` as bool."""
    text_mask = text_mask.astype(bool)
    return adapter.text_encoder.encode(text_encoder_params, tokens, text_mask), text_mask


def base_denoiser(
    stage: Stage,
    text_embeddings: jax.Array,
    text_mask: jax.Array,
    condition: jax.Array | None,
    condition_mask: jax.Array | None,
    guidance_weight: jax.Array,
    config: SamplingConfig,
) -> samplers.Denoiser:
    """Guided `denoise_fn(z, logsnr) -> x0_hat` of the base model for a batch of whole clips.

    `condition: [B, T, H, W, 3]`, `condition_mask: [B, T, H, W, 1]` (conditional models only) are appended to z
    on channels exactly as the trainer does (`ModelAdapter.inputs_from_batch`, PAPER.md 4.2).
    """
    adapter = stage.adapter
    channel_condition = None
    if adapter.stage == "conditional":
        channel_condition = adapter.inputs_from_batch(
            {"video": condition, "condition": condition, "condition_mask": condition_mask},
            jax.random.key(0)).channel_condition  # [B, T, H, W, 4] = <C * M, M>

    def model_fn(z, logsnr, cond):
        inputs = adapter_lib.ModelInputs(x0=z, channel_condition=cond["channel_condition"])
        return adapter.apply(stage.params, z, logsnr, inputs, cond["text_embeddings"], cond["text_mask"],
                             None, train=False)

    cond = {"text_embeddings": text_embeddings, "text_mask": text_mask, "channel_condition": channel_condition}
    null_cond = {**cond, "text_embeddings": jnp.zeros_like(text_embeddings), "text_mask": jnp.zeros_like(text_mask)}
    weight = per_row_weight(guidance_weight, 5)
    denoise_fn = guidance.guided_denoiser(model_fn, cond, null_cond, weight, adapter.parameterization,
                                          config.threshold_percentile)
    if not config.replace_known or condition is None:
        return denoise_fn

    def replace_known(z, logsnr):
        return condition_mask * condition + (1.0 - condition_mask) * denoise_fn(z, logsnr)

    return replace_known


def generate_base(
    stage: Stage,
    batch: dict[str, jax.Array],
    schedule: schedules.Schedule,
    config: SamplingConfig,
    num_steps: int,
    t_start: float = 1.0,
) -> jax.Array:
    """Samples the whole clip with the base model: `[B, T, H, W, 3]` in [-1, 1].

    `batch`: `tokens: int32 [B, L]`, `text_mask: bool [B, L]`, `keys: uint32 [B, 2]`, `guidance_weight: [B]`;
    conditional models also `condition`, `condition_mask`; SDEdit (`t_start < 1`) needs `init_video:
    [B, T, H, W, 3]`, noised to `t_start` with the row's noise (PAPER.md 4, SDEdit).
    """
    adapter = stage.adapter
    embeddings, text_mask = encode_text(adapter, stage.text_encoder_params, batch["tokens"], batch["text_mask"])
    noise_keys, sampler_keys = row_keys(batch["keys"], BASE_STREAM, 2)
    sample_shape = tuple(adapter.sample_shape)
    noise = row_normal(noise_keys, sample_shape)
    if t_start < 1.0:
        z_init = losses.noisy_sample(batch["init_video"], noise, schedule(jnp.float32(t_start)))
    else:
        z_init = noise
    denoise_fn = base_denoiser(stage, embeddings, text_mask, batch.get("condition"), batch.get("condition_mask"),
                               batch["guidance_weight"], config)
    return samplers.sample(denoise_fn, sampler_keys, z_init, schedule, num_steps, t_start, config.sampler,
                           config.eta, clip_output=True)


def ssr_windows(stage: Stage, num_frames: int, config: SamplingConfig) -> tuple[tuple[int, ...], int]:
    """MultiDiffusion window starts and length for a clip of `num_frames` (PAPER.md 3)."""
    window_length = min(config.ssr_window_length or stage.adapter.sample_shape[0], num_frames)
    stride = config.ssr_window_stride or max(window_length // 2, 1)
    return multidiffusion.window_starts(num_frames, window_length, stride), window_length


def ssr_denoiser(
    stage: Stage,
    low_res: jax.Array,
    text_embeddings: jax.Array,
    text_mask: jax.Array,
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
    batch_size, num_frames = low_res.shape[:2]
    starts, window_length = ssr_windows(stage, num_frames, config)
    num_windows = len(starts)
    repeat = lambda per_clip: multidiffusion.repeat_for_windows(per_clip, num_windows)  # noqa: E731
    window_weight = per_row_weight(repeat(jnp.full((batch_size,), config.ssr_guidance_weight)), 5)
    text = {"text_embeddings": repeat(text_embeddings), "text_mask": repeat(text_mask),
            "noise_aug_logsnr": repeat(aug_logsnr)}
    null_text = {**text, "text_embeddings": jnp.zeros_like(text["text_embeddings"]),
                 "text_mask": jnp.zeros_like(text["text_mask"])}

    def model_fn(z, logsnr, c):
        inputs = adapter_lib.ModelInputs(x0=z, low_res=c["low_res"])
        return adapter.apply(stage.params, z, logsnr, inputs, c["text_embeddings"], c["text_mask"],
                             c["noise_aug_logsnr"], train=False)

    def windowed_denoise_fn(z_windows, logsnr_windows, low_res_windows):
        denoise_fn = guidance.guided_denoiser(
            model_fn, {**text, "low_res": low_res_windows}, {**null_text, "low_res": low_res_windows},
            window_weight, adapter.parameterization, threshold_percentile=None)
        return denoise_fn(z_windows, logsnr_windows)

    fused = multidiffusion.multidiffusion_denoiser(windowed_denoise_fn, starts, window_length, low_res=low_res)
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
    """
    adapter = stage.adapter
    batch_size, num_frames = low_res.shape[:2]
    height, width = adapter.sample_shape[1:3]
    if low_res.shape[2:4] != (adapter.low_res_size,) * 2:
        # The SSR model was trained on inputs of low_res_size: bring the base frames to that size first.
        low_res = jax.image.resize(low_res, (batch_size, num_frames, adapter.low_res_size, adapter.low_res_size, 3),
                                   "linear")
    embeddings, text_mask = encode_text(adapter, stage.text_encoder_params, batch["ssr_tokens"],
                                        batch["ssr_text_mask"])
    sampler_keys, aug_keys, noise_keys = row_keys(batch["keys"], SSR_STREAM, 3)
    aug_level = augmentation.AUGMENTATION_SCHEDULE(jnp.float32(config.ssr_noise_aug_t))  # not the SR's schedule
    aug_logsnr = jnp.full((batch_size,), aug_level, jnp.float32)
    low_res = losses.noisy_sample(low_res, row_normal(aug_keys, low_res.shape[1:]), aug_logsnr)
    denoise_fn = ssr_denoiser(stage, low_res, embeddings, text_mask, aug_logsnr, config)
    z_init = row_normal(noise_keys, (num_frames, height, width, 3))
    return samplers.sample(denoise_fn, sampler_keys, z_init, schedule, config.ssr_num_steps, 1.0,
                           config.sampler, config.eta, clip_output=True)
