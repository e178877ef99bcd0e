"""The narrow interface between a stage's model and the trainer (and sampling): how a batch becomes model inputs.

The trainer knows nothing of U-Net internals. A `ModelAdapter` holds the Flax module (called as in
docs/ARCHITECTURE.md), the frozen text encoder, the stage (which decides how a batch maps to the clean
target x0 and extra inputs), the example shapes used for initialisation, and which parameters train.

Stages (the names run files give `unet_adapter.stage`, stages/factory.py):
  t2i:         x0 = batch["image"] [B, H, W, 3], or one random frame per clip of batch["video"].
  sr:          the image SR model the SSR is inflated from: x0 = a still image or frame as for "t2i";
               low_res = its area-downsampled copy (noise-augmented in the step).
  stunet:      x0 = batch["video"] [B, T, H, W, 3].
  For the video stages, clips longer than `window_frames` are cut to a random window of that many frames;
  shorter clips are an error (the model's frame count is fixed).
  ssr:         x0 = a random window of `window_frames` frames of batch["video"] at high resolution (the SSR
               runs on windows, paper 3.2); low_res = its area-downsampled copy (noise-augmented in the step).
  conditional: x0 = batch["video"]; the model sees <z, C, M> on channels (paper 4.2). C, M come from
               batch["condition"], batch["condition_mask"], which must have been drawn on clips of exactly
               `window_frames` (a mask cut from a longer clip loses its known first frame); when absent,
               image-to-video conditioning is built on the window (C = first frame then blank, M = 1 on the
               first frame) -- our default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from lumiere_jax.condition_masks import condition_mask
from lumiere_jax.diffusion import parameterization as param_lib
from lumiere_jax.diffusion import samplers
from lumiere_jax.models import unet

Params = Any
Batch = dict[str, jax.Array]

STAGES = ("t2i", "stunet", "sr", "ssr", "conditional")
IMAGE_STAGES = ("t2i", "sr")
SR_STAGES = ("sr", "ssr")
BASE_VIDEO_STAGES = ("stunet", "conditional")  # what the sampling job and exported sampling take as base
CONDITION_CHANNELS = 4  # C (3) + M (1), paper 4.2
UPSAMPLE_RESIDUAL_MARK = "_upsample_residual_std"


@flax.struct.dataclass
class ModelInputs:
    """What one training example feeds the model besides the noisy sample and the text."""

    x0: jax.Array  # [B, (T,) H, W, 3] clean target in [-1, 1]
    channel_condition: jax.Array | None = None  # [B, (T,) H, W, 4]: <C, M> appended to z on channels
    low_res: jax.Array | None = None  # [B, (T,) h, w, 3] clean low-res input (SSR)


@dataclasses.dataclass(frozen=True)
class ModelAdapter:
    """A stage's model as the trainer sees it.

    Attributes:
      name: identifies the architecture in checkpoints (resuming into another model fails clearly).
      module: Flax module with the ARCHITECTURE.md call signature.
      stage: one of STAGES.
      text_encoder: frozen encoder with `init(rng)`, `encode(params, tokens, mask)`, `logical_partition_specs()`.
      sample_shape: shape of one clean example x0: `(H, W, 3)` or `(T, H, W, 3)`.
      low_res_size: SSR input frame size (ssr stage only).
      text_length: token count used for the example inputs of `init`.
      trainable_mask: params -> tree of bools (True = trained); None trains everything.
      window_frames: video stages: frames of the random temporal window cut from longer clips (None: whole
        clip). For SSR this is T', the window the model runs on.
      parameterization: what the model predicts ("v", "eps" or "x0").
      learned_variance: the model's raw output is the prediction followed by as many channels of a learned-range
        variance interpolation in [-1, 1] (Improved DDPM; DeepFloyd IF). The training loss reads the prediction
        (`prediction_part`; the variance channels are not trained); the ancestral sampler uses both.
      upsample_residual_std: None: the model diffuses x0 (Imagen's SR, the paper presets). A number (SR stages):
        the model diffuses the residual of x0 over the bilinear upsample of its low-res input (as given to it,
        noise augmentation included; as SRDiff), preconditioned (EDM, `param_lib.preconditioned_x0`) for
        residuals of this standard deviation. `apply` returns the prediction about x0 in `parameterization`, so
        the trainer and samplers see an ordinary model. At high noise its x0 is the upsample plus its output
        scaled by the std, where an x0 model's whole output is. Our option for the tiny demo.
    """

    name: str
    module: nn.Module
    stage: str
    text_encoder: Any
    sample_shape: tuple[int, ...]
    low_res_size: int = 0
    text_length: int = 8
    trainable_mask: Callable[[Params], Any] | None = None
    window_frames: int | None = None
    parameterization: str = "v"
    learned_variance: bool = False
    upsample_residual_std: float | None = None

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; choose one of {STAGES}")
        expected_rank = 3 if self.stage in IMAGE_STAGES else 4
        if len(self.sample_shape) != expected_rank:
            raise ValueError(f"stage {self.stage!r} needs sample_shape of rank {expected_rank} "
                             f"({'(H, W, 3)' if expected_rank == 3 else '(T, H, W, 3)'}); got {self.sample_shape}")
        if self.stage in SR_STAGES and not self.low_res_size:
            raise ValueError(f"the {self.stage} stage needs low_res_size (frame size of the low-res input)")
        if self.upsample_residual_std is not None and (self.stage not in SR_STAGES or self.learned_variance
                                                       or not self.upsample_residual_std > 0):
            raise ValueError(f"upsample_residual_std is a positive number for the SR stages {SR_STAGES} without a "
                             f"learned variance; got {self.upsample_residual_std} for stage {self.stage!r}, "
                             f"learned_variance={self.learned_variance}")

    @property
    def input_channels(self) -> int:
        return 3 + (CONDITION_CHANNELS if self.stage == "conditional" else 0)

    @property
    def low_res_channels(self) -> int:
        """Input channels the model appends after x for its low-res input (SR stages)."""
        return 3 if self.stage in SR_STAGES else 0

    def inputs_from_batch(self, batch: Batch, rng: jax.Array) -> ModelInputs:
        """Maps a data batch (ARCHITECTURE.md 'Batches') to the model inputs of this stage."""
        if self.stage == "t2i":
            return ModelInputs(x0=_image_from_batch(batch, rng))
        if self.stage == "sr":
            image = _image_from_batch(batch, rng)  # [B, H, W, 3]
            return ModelInputs(x0=image, low_res=area_downsample(image, self.low_res_size))
        video = batch["video"]  # [B, T, H, W, 3]
        condition, mask = batch.get("condition"), batch.get("condition_mask")
        given = self.stage == "conditional" and condition is not None and mask is not None
        if self.window_frames is not None:
            check_clip_frames(video.shape[1], self.window_frames, masks_given=given)
            if video.shape[1] > self.window_frames:
                start = random_window_starts(rng, video.shape[0], video.shape[1], self.window_frames)
                video = take_window(video, start, self.window_frames)
        if self.stage == "conditional" and not given:
            condition, mask = first_frame_condition(video)
        if self.stage == "stunet":
            return ModelInputs(x0=video)
        if self.stage == "ssr":
            return ModelInputs(x0=video, low_res=area_downsample(video, self.low_res_size))
        return ModelInputs(x0=video, channel_condition=channel_condition(condition, mask))

    def example_inputs(self, batch_size: int = 1) -> tuple[ModelInputs, jax.Array, jax.Array]:
        """Zero inputs of the right shapes: `(model inputs, text_embeddings [B, L, D], text_mask [B, L])`."""
        x0 = jnp.zeros((batch_size, *self.sample_shape), jnp.float32)
        condition = None
        if self.stage == "conditional":
            condition = jnp.zeros((*x0.shape[:-1], CONDITION_CHANNELS), jnp.float32)
        low_res = None
        if self.stage in SR_STAGES:
            low_res = jnp.zeros((*x0.shape[:-3], self.low_res_size, self.low_res_size, self.low_res_channels),
                                jnp.float32)
        embed_dim = self.text_encoder.config.d_model
        text_embeddings = jnp.zeros((batch_size, self.text_length, embed_dim), jnp.float32)
        text_mask = jnp.ones((batch_size, self.text_length), bool)
        return ModelInputs(x0, condition, low_res), text_embeddings, text_mask

    def init(self, rng: jax.Array, batch_size: int = 1) -> Params:
        """Boxed (logically partitioned) parameters of the model: the 'params' collection.

        Inside a mesh, use a `batch_size` divisible by the data axes (activation constraints split the batch).
        """
        inputs, text_embeddings, text_mask = self.example_inputs(batch_size)
        logsnr = jnp.zeros((inputs.x0.shape[0],), jnp.float32)
        model_input = self.model_input(inputs.x0, inputs)
        variables = self.module.init(
            rng, model_input, logsnr, text_embeddings, text_mask, **self.low_res_kwargs(inputs, logsnr))
        return variables["params"]

    def prediction_part(self, raw: jax.Array) -> jax.Array:
        """The prediction channels of a raw model output (without a learned variance's)."""
        return samplers.split_learned_variance(raw)[0] if self.learned_variance else raw

    def loss_weight(self, logsnr: jax.Array) -> jax.Array:
        """Per-example weight `[B]` of the denoising loss at `logsnr: [B]`: 1, or for an upsample-residual model
        EDM's weighting, uniform in its own output: that output's error times `c_out / sigma` is the v error
        (`param_lib.preconditioned_x0`), so the weight is `scale^2 / std^2` (1 at low noise, 1 / std^2 at high)."""
        if self.upsample_residual_std is None:
            return jnp.ones_like(logsnr)
        alpha, sigma = param_lib.alpha_sigma_like(logsnr, logsnr)
        return param_lib.preconditioned_input_scale(alpha, sigma, self.upsample_residual_std) ** 2 / (
            self.upsample_residual_std ** 2)

    def model_input(self, z: jax.Array, inputs: ModelInputs) -> jax.Array:
        """The model's x: the noisy sample, with <C, M> appended on channels for conditional generation."""
        if inputs.channel_condition is None:
            return z
        return jnp.concatenate([z, inputs.channel_condition.astype(z.dtype)], axis=-1)

    def low_res_kwargs(self, inputs: ModelInputs, noise_aug_logsnr: jax.Array) -> dict[str, jax.Array]:
        """Keyword arguments for the SSR inputs (empty for other stages); `low_res` already augmented."""
        if inputs.low_res is None:
            return {}
        return {"low_res": inputs.low_res, "noise_aug_logsnr": noise_aug_logsnr}

    def apply(self, params: Params, z: jax.Array, logsnr: jax.Array, inputs: ModelInputs,
              text_embeddings: jax.Array, text_mask: jax.Array, noise_aug_logsnr: jax.Array | None,
              train: bool, dropout_rng: jax.Array | None = None) -> jax.Array:
        """Raw model prediction `[B, (T,) H, W, 3]` for noisy `z` at `logsnr: [B]` (an upsample-residual model's
        turned into the prediction about x0 in `parameterization`)."""
        rngs = {"dropout": dropout_rng} if dropout_rng is not None else {}
        residual_std = self.upsample_residual_std
        if residual_std is None:
            return self.module.apply(
                {"params": params}, self.model_input(z, inputs), logsnr, text_embeddings, text_mask,
                **self.low_res_kwargs(inputs, noise_aug_logsnr), train=train, rngs=rngs)
        upsample = unet.upsample_low_res(inputs.low_res, *z.shape[-3:-1]).astype(z.dtype)  # [B, (T,) H, W, 3]
        alpha, sigma = param_lib.alpha_sigma_like(logsnr, z)
        z_residual = z - alpha * upsample  # alpha * (x0 - upsample) + sigma * eps
        scale = param_lib.preconditioned_input_scale(alpha, sigma, residual_std)
        raw = self.module.apply(
            {"params": params}, self.model_input(z_residual / scale, inputs), logsnr, text_embeddings, text_mask,
            **self.low_res_kwargs(inputs, noise_aug_logsnr), train=train, rngs=rngs)
        x0 = upsample + param_lib.preconditioned_x0(raw, z_residual, alpha, sigma, residual_std)
        return param_lib.from_x0(x0, z, logsnr, self.parameterization)


def channel_condition(condition: jax.Array, mask: jax.Array) -> jax.Array:
    """The conditional model's extra channels (PAPER.md 4.2): `<C * M, M>`, `[..., 3] + [..., 1] -> [..., 4]`."""
    return jnp.concatenate([condition * mask, mask], axis=-1)


def _image_from_batch(batch: Batch, rng: jax.Array) -> jax.Array:
    """`image: [B, H, W, 3]` from the batch, or one uniformly chosen frame per clip of `video: [B, T, H, W, 3]`."""
    if "image" in batch:
        return batch["image"]
    video = batch["video"]
    frame = jax.random.randint(rng, (video.shape[0],), 0, video.shape[1])
    return jnp.take_along_axis(video, frame[:, None, None, None, None], axis=1)[:, 0]


def check_clip_frames(clip_frames: int, window_frames: int, masks_given: bool) -> None:
    """Raises unless clips of `clip_frames` can feed a model of `window_frames` frames."""
    if clip_frames < window_frames:
        raise ValueError(f"clips of {clip_frames} frames are shorter than the model's {window_frames} frames; "
                         f"train on clips of at least {window_frames} frames or use a model with fewer frames")
    if masks_given and clip_frames != window_frames:
        raise ValueError(
            f"condition masks were drawn on clips of {clip_frames} frames but the model sees windows of "
            f"{window_frames}: a window cut from them would not keep the conditioning (e.g. image-to-video's "
            f"known first frame). Cut the window before drawing masks: ConditionalInputs.window_frames = "
            f"{window_frames} (runs/finetune_conditional.gin binds it to the model's frame count)")


def random_window_starts(rng: jax.Array, batch_size: int, total: int, num_frames: int) -> jax.Array:
    """Uniform start frames `[B]` of windows of `num_frames` inside clips of `total` frames."""
    return jax.random.randint(rng, (batch_size,), 0, total - num_frames + 1)


def take_window(video: jax.Array, starts: jax.Array, num_frames: int) -> jax.Array:
    """`[B, T, ...] -> [B, num_frames, ...]`: frames `starts[b] .. starts[b] + num_frames - 1` of each clip."""
    return jax.vmap(lambda clip, start: jax.lax.dynamic_slice_in_dim(clip, start, num_frames, axis=0))(video, starts)


def area_downsample(video: jax.Array, size: int) -> jax.Array:
    """Averages `video: [B, (T,) H, W, C]` over square pixel blocks to `[B, (T,) size, size, C]`."""
    *lead, height, width, channels = video.shape
    if height % size or width % size:
        raise ValueError(f"frames of {height}x{width} cannot be area-downsampled to {size}x{size}; "
                         "choose a low_res_size dividing the frame size")
    factor_h, factor_w = height // size, width // size
    blocks = video.reshape(*lead, size, factor_h, size, factor_w, channels)
    return blocks.mean(axis=(-4, -2))


def upsample_residual_mark(residual_std: float | None) -> str:
    """What ends the name of a model with `upsample_residual_std` (empty for None): `_upsample_residual_std0.1`."""
    return "" if residual_std is None else f"{UPSAMPLE_RESIDUAL_MARK}{residual_std:g}"


def first_frame_condition(video: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Image-to-video conditioning (paper 4.2): C = first frame then blank, M = 1 on the whole first frame.

    `video: [B, T, H, W, 3]` -> `condition: [B, T, H, W, 3]`, `mask: [B, T, H, W, 1]`.
    """
    mask = condition_mask("image_to_video", jnp.ones((*video.shape[:-1], 1), video.dtype), maximum=jnp.maximum)
    return video * mask, mask
