"""Classifier-free guidance and its controls, dynamic thresholding, and the guided denoiser of a model function.

Guidance combines the model's raw predictions (eps, x0 or v, whatever the model outputs), then converts to
x0. The conversion is affine in the prediction with coefficients that depend only on `(z, logsnr)`, which
both halves of the guided batch share, so plain guidance gives the same x0 in any parameterisation
(tests/diffusion/test_guidance.py checks this). Controls, each per row:
  negative prompt   the unconditional half takes any condition (`null_cond`), e.g. a prompt to steer away from;
  guidance rescale  Lin et al. 2024 (eq. 15-16): `phi * guided * std(cond) / std(guided) + (1 - phi) * guided`,
                    std over all non-batch dims of a row, in the model's own parameterisation (they use v);
  guidance interval Kynkaenniemi et al. 2024: guidance only at noise levels inside `[logsnr_low, logsnr_high]`;
                    outside, the weight is 1 (the conditional prediction alone).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from lumiere_jax.diffusion import parameterization as param_lib
from lumiere_jax.diffusion import samplers

ModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


def classifier_free_guidance(conditional: jax.Array, unconditional: jax.Array, weight: float) -> jax.Array:
    """`unconditional + weight * (conditional - unconditional)`: weight 1 is conditional, 0 unconditional."""
    return unconditional + weight * (conditional - unconditional)


def rescale_guidance(guided: jax.Array, conditional: jax.Array, rescale: float | jax.Array) -> jax.Array:
    """Guidance rescale (Lin et al. 2024): blends `guided` with itself scaled to the conditional's std per row.

    `guided, conditional: [B, ...]`; `rescale`: phi, a float or `[B]`; 0 leaves `guided` unchanged.
    """
    axes = tuple(range(1, guided.ndim))
    std_ratio = (jnp.std(conditional.astype(jnp.float32), axis=axes, keepdims=True)
                 / jnp.maximum(jnp.std(guided.astype(jnp.float32), axis=axes, keepdims=True), 1e-12))
    phi = param_lib.broadcast_to_rank(jnp.asarray(rescale, jnp.float32), guided.ndim)
    return (phi * guided * std_ratio + (1.0 - phi) * guided).astype(guided.dtype)


def interval_weight(weight: float | jax.Array, logsnr: jax.Array, logsnr_interval: jax.Array | None,
                    ndim: int) -> float | jax.Array:
    """The guidance weight where `logsnr: [B]` lies inside `logsnr_interval: [B, 2]` (low, high), else 1."""
    if logsnr_interval is None:
        return weight
    inside = (logsnr >= logsnr_interval[:, 0]) & (logsnr <= logsnr_interval[:, 1])  # [B]
    return jnp.where(param_lib.broadcast_to_rank(inside, ndim), weight, 1.0)


def dynamic_threshold(x0: jax.Array, percentile: float = 99.5, max_scale: float | None = None) -> jax.Array:
    """Imagen's dynamic thresholding of a predicted `x0: [B, ...]`.

    Per example, `s = max(percentile_p(|x0|) over all non-batch dims, 1)`, capped at `max_scale` when given (IF's
    sampler: 95th percentile, cap 1.5); returns `clip(x0, -s, s) / s`. Data already inside [-1, 1] with `s = 1`
    is unchanged; a cap of 1 is static thresholding, `clip(x0, -1, 1)`. Percentiles use linear interpolation
    (as NumPy).
    """
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile={percentile} must lie in [0, 100] (Imagen uses 99.5)")
    if max_scale == 1.0:  # the scale is 1 whatever the percentile: no sort of the clip
        return jnp.clip(x0, -1.0, 1.0)
    # |x0| is materialised for the percentile's sort with the last two axes folded, `[B, rows, W * C]`: in x0's
    # own shape a TPU pads the minor `[W, 3]` to (8, 128) tiles, 40x the array (a 1024x1024 clip: 40 GiB).
    folded = x0.reshape(x0.shape[0], -1, x0.shape[-2] * x0.shape[-1]) if x0.ndim >= 3 else x0[:, None]
    folded = jax.lax.optimization_barrier(jnp.abs(folded).astype(jnp.float32))
    scale = jnp.maximum(jnp.percentile(folded.reshape(x0.shape[0], -1), percentile, axis=1), 1.0)
    if max_scale is not None:
        scale = jnp.minimum(scale, max_scale)
    scale = param_lib.broadcast_to_rank(scale, x0.ndim).astype(x0.dtype)
    return jnp.clip(x0, -scale, scale) / scale


def thresholded(denoise_fn: samplers.Denoiser, percentile: float | None,
                max_scale: float | None = None) -> samplers.Denoiser:
    """`denoise_fn` followed by dynamic thresholding of its whole x0 prediction (percentile None: unchanged)."""
    if percentile is None:
        return denoise_fn
    return lambda z, logsnr: samplers.map_x0(lambda x0: dynamic_threshold(x0, percentile, max_scale),
                                             denoise_fn(z, logsnr))


def _concat_batch(first: Any, second: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=0), first, second)


def guided_denoiser(
    model_fn: ModelFn,
    cond: Any,
    null_cond: Any,
    guidance_weight: float | jax.Array,
    parameterization: str = "v",
    threshold_percentile: float | None = 99.5,
    rescale: float | jax.Array = 0.0,
    logsnr_interval: jax.Array | None = None,
    sequential: bool = False,
    learned_variance: bool = False,
) -> samplers.Denoiser:
    """Builds `denoise_fn(z, logsnr) -> x0_hat` from `model_fn(z, logsnr, cond) -> raw prediction`.

    `cond` and `null_cond` are pytrees with batch dim B (e.g. text embeddings and mask, low-res video); the
    null one carries the dropped or negative condition (zero embeddings and an all-False mask, or a negative
    prompt's) and anything shared (low-res). Conditional and unconditional run as ONE batch of 2B, or with
    `sequential` one after the other (a `lax.map` over the two: half the activation memory, same result). Raw
    predictions are guided (weight, optionally only inside `logsnr_interval: [B, 2]`), optionally rescaled
    (`rescale`: phi, float or `[B]`), converted to x0 and dynamically thresholded (skip with
    `threshold_percentile=None`). A Python `guidance_weight` of 1 without an interval skips the unconditional
    half entirely; array weights (e.g. per row) always run both halves. With `learned_variance` the model's
    raw output is the prediction followed by as many variance-interpolation channels (IF): the prediction is
    guided as above, the variance is the conditional half's (as IF's own pipeline does), and the result is a
    `samplers.LearnedVariance`.
    """
    param_lib.check_parameterization(parameterization)

    def finish(prediction, variance_interpolation, z, logsnr):
        x0_hat = param_lib.to_x0(prediction, z, logsnr, parameterization)
        if threshold_percentile is not None:
            x0_hat = dynamic_threshold(x0_hat, threshold_percentile)
        if variance_interpolation is None:
            return x0_hat
        return samplers.LearnedVariance(x0_hat, variance_interpolation)

    def split(raw):  # -> (prediction, variance interpolation or None)
        return samplers.split_learned_variance(raw) if learned_variance else (raw, None)

    def denoise_fn(z: jax.Array, logsnr: jax.Array) -> jax.Array | samplers.LearnedVariance:
        if isinstance(guidance_weight, (int, float)) and guidance_weight == 1.0:
            return finish(*split(model_fn(z, logsnr, cond)), z, logsnr)
        if sequential:
            both = jax.tree.map(lambda c, n: jnp.stack([c, n]), cond, null_cond)
            conditional, unconditional = jax.lax.map(lambda c: model_fn(z, logsnr, c), both)
        else:
            z_both = jnp.concatenate([z, z], axis=0)
            logsnr_both = jnp.concatenate([logsnr, logsnr], axis=0)
            prediction = model_fn(z_both, logsnr_both, _concat_batch(cond, null_cond))
            conditional, unconditional = jnp.split(prediction, 2, axis=0)
        (conditional, variance_interpolation), (unconditional, _) = split(conditional), split(unconditional)
        weight = interval_weight(guidance_weight, logsnr, logsnr_interval, z.ndim)
        guided = classifier_free_guidance(conditional, unconditional, weight)
        if not (isinstance(rescale, (int, float)) and rescale == 0.0):
            guided = rescale_guidance(guided, conditional, rescale)
        return finish(guided, variance_interpolation, z, logsnr)

    return denoise_fn
