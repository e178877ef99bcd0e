"""SSR sampling: the order guide per window, fuse the raw x0 predictions, then threshold the fused clip (PAPER.md
3 with Imagen's dynamic thresholding), against a NumPy reimplementation; the augmentation level's schedule."""

import jax
import jax.numpy as jnp
import numpy as np

from lumiere_jax.diffusion import multidiffusion
from lumiere_jax.diffusion import schedules
from lumiere_jax.sample import applications
from lumiere_jax.sample import ssr as ssr_stage
from lumiere_jax.stages import adapter as adapter_lib
from tiny_setup import SIZE, SSR_SIZE, make_adapter, random_params, ssr_config

NUM_FRAMES, PERCENTILE, WEIGHT = 5, 90.0, 3.0


def numpy_threshold(x0):
    scale = np.maximum(np.percentile(np.abs(x0.reshape(len(x0), -1)), PERCENTILE, axis=1), 1.0)
    scale = scale.reshape((-1,) + (1,) * (x0.ndim - 1))
    return np.clip(x0, -scale, scale) / scale


def test_ssr_guides_per_window_fuses_raw_x0_then_thresholds_the_clip():
    adapter = make_adapter("ssr", ssr_config())  # 2-frame windows whose temporal layers couple frames
    stage = applications.Stage(adapter, random_params(adapter, 5, scale=1.0), None)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2, NUM_FRAMES, SSR_SIZE, SSR_SIZE, 3)).astype(np.float32)
    low_res = rng.uniform(-1, 1, (2, NUM_FRAMES, SIZE, SIZE, 3)).astype(np.float32)
    embeddings = rng.normal(size=(2, 8, 32)).astype(np.float32)
    text_mask = np.arange(8)[None] < np.array([[5], [8]])
    logsnr, aug_logsnr = np.array([-1.0, 0.5], np.float32), np.array([3.0, 3.0], np.float32)
    config = applications.SamplingConfig(threshold_percentile=PERCENTILE, ssr_guidance_weight=WEIGHT,
                                         ssr_window_length=2, ssr_window_stride=1)
    text = applications.TextGuidance(
        jnp.asarray(embeddings), jnp.asarray(text_mask), jnp.zeros(embeddings.shape), jnp.zeros(text_mask.shape, bool),
        weight=jnp.full((2,), WEIGHT), rescale=jnp.zeros(2), logsnr_interval=jnp.tile(jnp.array([-99.0, 99.0]), (2, 1)))
    denoise_fn = ssr_stage.ssr_denoiser(stage, jnp.asarray(low_res), text, jnp.asarray(aug_logsnr), config)
    result = np.asarray(jax.jit(denoise_fn)(jnp.asarray(z), jnp.asarray(logsnr)))

    alpha = np.sqrt(1 / (1 + np.exp(-logsnr))).reshape(-1, 1, 1, 1, 1)
    sigma = np.sqrt(1 / (1 + np.exp(logsnr))).reshape(-1, 1, 1, 1, 1)
    apply = jax.jit(lambda z_w, low_w, text, mask: adapter.apply(
        stage.params, z_w, logsnr, adapter_lib.ModelInputs(x0=z_w, low_res=low_w), text, mask, aug_logsnr,
        train=False))
    fused_sum, count = np.zeros_like(z, np.float64), np.zeros(NUM_FRAMES)
    per_window_thresholded = np.zeros_like(z, np.float64)  # the old order, to show the order matters here
    for start in multidiffusion.window_starts(NUM_FRAMES, 2, 1):
        frames = slice(start, start + 2)
        z_w, low_w = z[:, frames], low_res[:, frames]
        v_cond = np.asarray(apply(z_w, low_w, embeddings, text_mask), np.float64)
        v_null = np.asarray(apply(z_w, low_w, np.zeros_like(embeddings), np.zeros_like(text_mask)), np.float64)
        x0_cond, x0_null = alpha * z_w - sigma * v_cond, alpha * z_w - sigma * v_null  # v-parameterisation
        guided = x0_null + WEIGHT * (x0_cond - x0_null)
        fused_sum[:, frames] += guided
        per_window_thresholded[:, frames] += numpy_threshold(guided)
        count[frames] += 1
    count = count.reshape(1, -1, 1, 1, 1)
    expected = numpy_threshold(fused_sum / count)
    np.testing.assert_allclose(result, expected, rtol=2e-4, atol=2e-4)
    assert np.abs(fused_sum / count).max() > 1.5  # thresholding is active
    assert np.abs(per_window_thresholded / count - expected).max() > 1e-2


def test_ssr_augmentation_level_is_on_the_plain_cosine_schedule(monkeypatch):
    """Sampling tells the SR the augmentation level of the plain cosine schedule, as training does, whatever
    the (shifted) schedule the SR denoises with."""
    adapter = make_adapter("ssr", ssr_config())
    text_params = jax.jit(adapter.text_encoder.init)(jax.random.key(0))
    stage = applications.Stage(adapter, None, text_params)
    seen = {}

    def recording_denoiser(stage, low_res, text, aug_logsnr, config):
        seen["aug_logsnr"] = np.asarray(aug_logsnr)
        return lambda z, logsnr: z

    monkeypatch.setattr(ssr_stage, "ssr_denoiser", recording_denoiser)
    batch = {"ssr_tokens": jnp.ones((2, 8), jnp.int32), "ssr_text_mask": jnp.ones((2, 8), bool),
             "keys": jnp.zeros((2, 2), jnp.uint32)}
    shifted = schedules.get_schedule("shifted_cosine", resolution=SSR_SIZE * 16, base_resolution=SIZE)
    config = applications.SamplingConfig(ssr_noise_aug_t=0.3, ssr_num_steps=1)
    ssr_stage.upsample_ssr(stage, jnp.zeros((2, NUM_FRAMES, SIZE, SIZE, 3)), batch, shifted, config)
    np.testing.assert_allclose(seen["aug_logsnr"], float(schedules.logsnr_cosine(np.float32(0.3))), atol=1e-5)


def _ssr_denoise_and_memory(windows_per_call, sequential=False):
    """The tiny SSR's guided, fused x0 on a 5-frame clip of 4 windows, and the compiled step's temp bytes."""
    adapter = make_adapter("ssr", ssr_config())
    stage = applications.Stage(adapter, random_params(adapter, 5, scale=1.0), None)
    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.normal(size=(2, NUM_FRAMES, SSR_SIZE, SSR_SIZE, 3)), jnp.float32)
    low_res = jnp.asarray(rng.uniform(-1, 1, (2, NUM_FRAMES, SIZE, SIZE, 3)), jnp.float32)
    text = applications.TextGuidance(
        jnp.asarray(rng.normal(size=(2, 8, 32)), jnp.float32), jnp.ones((2, 8), bool), jnp.zeros((2, 8, 32)),
        jnp.zeros((2, 8), bool), weight=jnp.full((2,), WEIGHT), rescale=jnp.zeros(2),
        logsnr_interval=jnp.tile(jnp.array([-99.0, 99.0]), (2, 1)))
    config = applications.SamplingConfig(threshold_percentile=None, ssr_window_length=2, ssr_window_stride=1,
                                         ssr_windows_per_call=windows_per_call,
                                         ssr_guidance_sequential=sequential)
    denoise_fn = jax.jit(ssr_stage.ssr_denoiser(stage, low_res, text, jnp.array([3.0, 3.0]), config))
    logsnr = jnp.array([-1.0, 0.5])
    temp_bytes = denoise_fn.lower(z, logsnr).compile().memory_analysis().temp_size_in_bytes
    return np.asarray(denoise_fn(z, logsnr)), temp_bytes


def test_ssr_window_chunks_leave_the_fused_result_and_bound_memory():
    """1, 2 or 3 windows per call (3: the last chunk padded) give the all-windows result; memory falls with
    the chunk size."""
    everything, memory_all = _ssr_denoise_and_memory(None)
    memory = {}
    for windows_per_call in (1, 2, 3):
        chunked, memory[windows_per_call] = _ssr_denoise_and_memory(windows_per_call)
        np.testing.assert_allclose(chunked, everything, rtol=1e-5, atol=1e-5)
    assert memory[1] < memory[2] < memory_all, (memory, memory_all)


def test_sequential_guidance_halves_are_the_doubled_batch():
    """The conditional and unconditional passes one after the other give the doubled batch's result with less
    memory (all windows in one call, so the guidance batch is the largest array)."""
    batched, memory_batched = _ssr_denoise_and_memory(None)
    sequential, memory_sequential = _ssr_denoise_and_memory(None, sequential=True)
    np.testing.assert_allclose(sequential, batched, rtol=1e-5, atol=1e-5)
    assert memory_sequential < 0.8 * memory_batched, (memory_sequential, memory_batched)
