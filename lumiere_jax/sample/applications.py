"""What the base and SSR stages share at sampling time: the job's sampling settings (`SamplingConfig`), the
settings fixed at compile time (`StaticSettings`), a loaded model (`Stage`), per-row keys and noise, text
guidance, and known-content replacement. The stages themselves are sample/base.py and sample/ssr.py.

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

from lumiere_jax.diffusion import guidance
from lumiere_jax.diffusion import multidiffusion
from lumiere_jax.diffusion import samplers
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
      threshold_max_scale: cap on dynamic thresholding's scale (IF's sampler: 1.5 with percentile 95, as
        sample/if.gin sets); None: no cap (Imagen). 1.0 is static thresholding: x0 clipped to [-1, 1], never
        rescaled (the demo's choice, sample/demo.gin).
      sdedit_strength: SDEdit noise level t0 in (0, 1]: the input video is noised to t0, then denoised.
      replace_known: after every denoiser call, overwrite x0_hat with C where M = 1 (RePaint-style hard
        constraint, our option), in the base stage and, with C and M upsampled, in the SSR. Off by default: the
        paper relies on the fine-tuned <J, C, M> model alone.
      ssr_num_steps: SSR sampler steps.
      ssr_guidance_weight: guidance weight of the SSR stage.
      ssr_window_length: MultiDiffusion window T' (None: the SSR model's frame count).
      ssr_window_stride: window stride (None: half the window, i.e. 50% overlap; our choice).
      ssr_windows_per_call: windows of each clip that go through the SSR model at once (its batch is twice
        this per clip with guidance); the fused result does not depend on it, memory does. None: all windows
        at once. Default 1 (our choice): the least memory (one 16x1024x1024 window and its guidance twin per
        clip at paper scale), no padded windows for any window count, and a call is already large enough to
        keep an accelerator busy; larger values only trade memory for fewer, larger model calls.
      ssr_guidance_sequential: run the SSR's conditional and unconditional passes one after the other instead
        of as one doubled batch: about half the activation memory per call, same result (the paper SSR split
        over a v6e-4 peaks at 28.19 GiB per chip without it, above 0.85 x HBM; BENCHMARKS.md 11c).
      ssr_noise_aug_t: noise conditioning augmentation level of the low-res input, as a time of the
        augmentation's own schedule (plain cosine, `diffusion.augmentation`), as in training.
    """

    num_steps: int = 64
    guidance_weight: float = 5.0
    sampler: str = "ddim"
    eta: float = 0.0
    threshold_percentile: float | None = 99.5
    threshold_max_scale: float | None = None
    sdedit_strength: float = 0.6
    replace_known: bool = False
    ssr_num_steps: int = 32
    ssr_guidance_weight: float = 3.0
    ssr_window_length: int | None = None
    ssr_window_stride: int | None = None
    ssr_windows_per_call: int | None = 1
    ssr_guidance_sequential: bool = False
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
        if self.ssr_windows_per_call is not None and self.ssr_windows_per_call < 1:
            raise ValueError(f"ssr_windows_per_call={self.ssr_windows_per_call} must be at least 1 (None: all "
                             "windows in one call)")
        if self.threshold_max_scale is not None and self.threshold_max_scale < 1.0:
            raise ValueError(f"threshold_max_scale={self.threshold_max_scale} must be at least 1 (the scale is "
                             "never below 1; None: no cap)")
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


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TextGuidance:
    """Per-row text conditions and guidance controls of one stage; rows may be MultiDiffusion windows.

    The negative text is the unconditional branch's: a negative prompt's embeddings, or zeros with an
    all-False mask (the null text of training) for rows without one. A pytree of rows (windows can be mapped
    over in chunks, `multidiffusion.map_window_chunks`).
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
                 rank: int, sequential: bool = False, learned_variance: bool = False) -> samplers.Denoiser:
        """Guided, unthresholded `denoise_fn` of `model_fn(z, logsnr, cond)`; `shared` goes to both halves
        (`sequential`: the two halves one after the other; `learned_variance`: the model also predicts its step
        variance; both as in `guidance.guided_denoiser`)."""
        cond = {"text_embeddings": self.embeddings, "text_mask": self.mask, **shared}
        null_cond = {"text_embeddings": self.negative_embeddings, "text_mask": self.negative_mask, **shared}
        return guidance.guided_denoiser(model_fn, cond, null_cond, per_row_weight(self.weight, rank),
                                        parameterization, threshold_percentile=None, rescale=self.rescale,
                                        logsnr_interval=self.logsnr_interval, sequential=sequential,
                                        learned_variance=learned_variance)


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


def known_content_denoiser(denoise_fn: samplers.Denoiser, condition: jax.Array,
                           condition_mask: jax.Array) -> samplers.Denoiser:
    """`replace_known`: x0_hat takes `condition: [B, T, H, W, 3]` wherever `condition_mask: [B, T, H, W, 1]` is 1."""

    def replace_known(z, logsnr):
        return samplers.map_x0(lambda x0: condition_mask * condition + (1.0 - condition_mask) * x0,
                               denoise_fn(z, logsnr))

    return replace_known
