"""MultiDiffusion: window layouts, fusion against NumPy least squares, and the fused sampler end to end."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumiere_jax.diffusion import multidiffusion
from lumiere_jax.diffusion import samplers
from lumiere_jax.diffusion import schedules

SCHEDULE = schedules.get_schedule("cosine")


def _numpy_least_squares_fusion(window_preds, starts, num_frames, weights):
    """Solves argmin_J sum_i || sqrt(W_i) (F_i J - P_i) ||^2 with explicit crop matrices F_i: [T', T]."""
    num_windows, window_length = weights.shape
    batch_size = window_preds.shape[0] // num_windows
    preds = window_preds.reshape((batch_size, num_windows, window_length, -1)).astype(np.float64)
    rows = []
    for start, window_weights in zip(starts, weights):
        crop = np.zeros((window_length, num_frames))
        crop[np.arange(window_length), start + np.arange(window_length)] = 1.0
        rows.append(np.sqrt(window_weights)[:, None] * crop)
    operator = np.concatenate(rows)  # [N * T', T]
    fused = []
    for clip in preds:
        rhs = np.concatenate([np.sqrt(w)[:, None] * p for w, p in zip(weights, clip)])  # [N * T', D]
        fused.append(np.linalg.lstsq(operator, rhs, rcond=None)[0])
    return np.stack(fused).reshape((batch_size, num_frames) + window_preds.shape[2:])


@pytest.mark.parametrize("num_frames,window_length,stride", [(80, 16, 8), (10, 4, 3), (7, 7, 1), (9, 5, 5)])
def test_window_starts_cover_every_frame_and_end_at_clip_end(num_frames, window_length, stride):
    starts = multidiffusion.window_starts(num_frames, window_length, stride)
    assert starts[0] == 0 and starts[-1] == num_frames - window_length
    assert all(0 < later - earlier <= stride for earlier, later in zip(starts, starts[1:]))
    covered = np.zeros(num_frames, bool)
    for start in starts:
        covered[start:start + window_length] = True
    assert covered.all()


def test_window_starts_examples():
    assert multidiffusion.window_starts(80, 16, 8) == tuple(range(0, 65, 8))
    assert multidiffusion.window_starts(10, 4, 3) == (0, 3, 6)
    assert multidiffusion.window_starts(11, 4, 3) == (0, 3, 6, 7)


def test_bad_layouts_raise_clear_errors():
    with pytest.raises(ValueError, match="longer than the clip"):
        multidiffusion.window_starts(8, 16, 4)
    with pytest.raises(ValueError, match="stride=0"):
        multidiffusion.window_starts(16, 8, 0)
    with pytest.raises(ValueError, match="leaves frames that no window covers"):
        multidiffusion.window_starts(16, 4, 5)
    video = jnp.zeros((1, 10, 2))
    with pytest.raises(ValueError, match="covered by no window"):
        multidiffusion.crop_windows(video, (0, 6), 3)
    with pytest.raises(ValueError, match="outside the clip"):
        multidiffusion.crop_windows(video, (0, 8), 3)
    with pytest.raises(ValueError, match="zero total weight"):
        multidiffusion.fuse_windows(jnp.zeros((2, 6, 2)), (0, 4), 10, weights=np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="fit neither"):
        multidiffusion.fuse_windows(jnp.zeros((2, 6, 2)), (0, 4), 10, weights=np.ones((3,)))


def test_crop_windows_layout_is_batch_major():
    video = jnp.arange(2 * 7, dtype=jnp.float32).reshape(2, 7, 1)
    windows = multidiffusion.crop_windows(video, (0, 2, 4), 3)
    assert windows.shape == (6, 3, 1)
    np.testing.assert_array_equal(windows[4, :, 0], video[1, 2:5, 0])  # row b * N + i = 1 * 3 + 1


@pytest.mark.parametrize("seed", range(4))
def test_fusion_equals_numpy_weighted_least_squares(seed):
    rng = np.random.default_rng(seed)
    num_frames = int(rng.integers(6, 14))
    window_length = int(rng.integers(2, num_frames + 1))
    stride = int(rng.integers(1, window_length + 1))
    starts = multidiffusion.window_starts(num_frames, window_length, stride)
    weights = rng.uniform(0.1, 2.0, size=(len(starts), window_length))
    window_preds = rng.normal(size=(2 * len(starts), window_length, 3, 2)).astype(np.float32)
    fused = jax.jit(functools.partial(
        multidiffusion.fuse_windows, starts=starts, num_frames=num_frames, weights=weights))(window_preds)
    expected = _numpy_least_squares_fusion(window_preds, starts, num_frames, weights)
    np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-5)


def test_per_window_weights_and_constant_windows():
    starts = multidiffusion.window_starts(12, 5, 2)
    rng = np.random.default_rng(0)
    per_window = rng.uniform(0.1, 3.0, size=len(starts))
    window_preds = rng.normal(size=(len(starts), 5, 2)).astype(np.float32)
    np.testing.assert_allclose(
        multidiffusion.fuse_windows(window_preds, starts, 12, per_window),
        multidiffusion.fuse_windows(window_preds, starts, 12, np.repeat(per_window[:, None], 5, axis=1)))
    constant = np.full((3 * len(starts), 5, 4, 4, 3), 0.37, np.float32)
    for weights in (None, per_window, rng.uniform(0.1, 3.0, size=(len(starts), 5))):
        np.testing.assert_allclose(multidiffusion.fuse_windows(constant, starts, 12, weights), 0.37, rtol=1e-6)


def test_crop_then_fuse_is_identity():
    video = jnp.asarray(np.random.default_rng(1).normal(size=(2, 11, 3, 3, 3)), jnp.float32)
    starts = multidiffusion.window_starts(11, 4, 3)
    windows = multidiffusion.crop_windows(video, starts, 4)
    np.testing.assert_allclose(multidiffusion.fuse_windows(windows, starts, 11), video, rtol=1e-6)


def _per_frame(gaussian_data):
    """The exact Gaussian denoiser applied to every frame independently: `[B, T, d]`, logsnr `[B]`."""
    return lambda z, logsnr, low_res=None: gaussian_data.denoise(z, logsnr)


def test_single_full_window_equals_plain_denoiser():
    def coupled(z, logsnr, low_res):
        # Mixes frames, so only a window spanning the clip reproduces it.
        return jnp.tanh(z + jnp.cumsum(z, axis=1) * 0.1 + low_res) * logsnr[:, None, None]

    z = jnp.asarray(np.random.default_rng(2).normal(size=(2, 6, 3)), jnp.float32)
    low_res = jnp.asarray(np.random.default_rng(3).normal(size=(2, 6, 3)), jnp.float32)
    logsnr = jnp.array([0.5, -1.0])
    denoise = multidiffusion.multidiffusion_denoiser(coupled, (0,), 6, frame_condition=low_res)
    np.testing.assert_allclose(denoise(z, logsnr), coupled(z, logsnr, low_res), rtol=1e-6)


def test_windowed_denoiser_sees_one_batch_of_cropped_windows_and_low_res():
    starts = multidiffusion.window_starts(9, 4, 2)
    calls = []

    def recording(z_windows, logsnr_windows, low_res_windows):
        calls.append((z_windows.shape, logsnr_windows, low_res_windows))
        return z_windows

    z = jnp.asarray(np.random.default_rng(4).normal(size=(2, 9, 3)), jnp.float32)
    low_res = jnp.arange(2 * 9, dtype=jnp.float32).reshape(2, 9, 1)
    denoise = multidiffusion.multidiffusion_denoiser(recording, starts, 4, frame_condition=low_res)
    np.testing.assert_allclose(denoise(z, jnp.array([1.0, 2.0])), z, rtol=1e-6)
    [(shape, logsnr_windows, low_res_windows)] = calls
    assert shape == (2 * len(starts), 4, 3)
    np.testing.assert_array_equal(logsnr_windows, np.repeat([1.0, 2.0], len(starts)))
    np.testing.assert_array_equal(low_res_windows, multidiffusion.crop_windows(low_res, starts, 4))


@pytest.mark.parametrize("sampler,eta", [("ddim", 0.0), ("ddpm", 0.0), ("dpmpp_2m", 0.0)])
def test_fused_sampler_equals_plain_sampler_for_per_frame_denoiser(gaussian_data, sampler, eta):
    """End to end: with a per-frame denoiser, overlapping windows + fusion reproduce whole-clip sampling,
    including shared step noise (DDPM): a per-window noise draw would break this equality."""
    shape, window_length, stride, num_steps = (4, 11, 3), 4, 3, 25
    rng = jax.random.PRNGKey(7)
    weights = np.random.default_rng(0).uniform(0.5, 2.0, size=(len(multidiffusion.window_starts(11, 4, 3)), 4))
    fused = jax.jit(lambda key: multidiffusion.multidiffusion_sample(
        _per_frame(gaussian_data), key, shape, SCHEDULE, num_steps, window_length, stride, weights,
        sampler=sampler, eta=eta, clip_output=False))(rng)
    init_rng, sampler_rng = jax.random.split(rng)
    z_init = jax.random.normal(init_rng, shape)
    plain = samplers.sample(gaussian_data.denoise, samplers.keys_per_row(sampler_rng, shape[0]), z_init, SCHEDULE,
                            num_steps, sampler=sampler, eta=eta)
    np.testing.assert_allclose(fused, plain, rtol=1e-4, atol=1e-4)
    assert float(jnp.std(plain)) > 0.1  # a real sample, not a collapsed output


def test_window_batch_can_be_sharded_over_devices(gaussian_data):
    """Windows live in the batch dimension, so the window batch splits over a data mesh axis unchanged."""
    devices = np.asarray(jax.devices()[:math.gcd(len(jax.devices()), 8)])
    mesh = jax.sharding.Mesh(devices, ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    starts = multidiffusion.window_starts(10, 4, 2)  # 4 windows; B * N = 2 * 4 = 8 rows

    def sharded_windows(z_windows, logsnr_windows, low_res_windows):
        z_windows = jax.lax.with_sharding_constraint(z_windows, batch_sharding)
        return gaussian_data.denoise(z_windows, logsnr_windows)

    z = jnp.asarray(np.random.default_rng(5).normal(size=(2, 10, 3)), jnp.float32)
    logsnr = jnp.array([-1.0, 1.5])
    sharded = jax.jit(multidiffusion.multidiffusion_denoiser(sharded_windows, starts, 4))(z, logsnr)
    np.testing.assert_allclose(sharded, gaussian_data.denoise(z, logsnr), rtol=1e-5, atol=1e-5)


def test_named_window_weightings():
    assert multidiffusion.window_weights("uniform", 3, 5) is None  # the plain average
    np.testing.assert_array_equal(multidiffusion.window_weights("triangular", 2, 5), [[1, 2, 3, 2, 1]] * 2)
    np.testing.assert_array_equal(multidiffusion.window_weights("triangular", 1, 4), [[1, 2, 2, 1]])
    with pytest.raises(ValueError, match="triangular"):
        multidiffusion.window_weights("hann", 2, 4)


@pytest.mark.parametrize("windows_per_call", [1, 2, 3, 4, 5, None])
def test_window_chunks_give_the_all_at_once_result_and_calls_of_the_chunk_size(windows_per_call):
    """Chunked calls (a lax.map over chunks, the last one filled with copies) equal one call on all windows,
    and each call sees `B * windows_per_call` rows with every input's rows kept together."""
    batch_size, num_windows = 2, 5
    rng = np.random.default_rng(6)
    z = jnp.asarray(rng.normal(size=(batch_size * num_windows, 4, 3)), jnp.float32)
    scale = {"a": jnp.asarray(rng.uniform(0.5, 2.0, size=(batch_size * num_windows,)), jnp.float32)}
    row_sizes = []

    def rowwise(z_rows, scale_rows):  # couples frames and inputs within a row only
        row_sizes.append(z_rows.shape[0])
        return {"x0": jnp.tanh(jnp.cumsum(z_rows, axis=1) * scale_rows["a"][:, None, None])}

    chunked = jax.jit(lambda z, scale: multidiffusion.map_window_chunks(
        rowwise, num_windows, windows_per_call, z, scale))(z, scale)
    np.testing.assert_allclose(chunked["x0"], rowwise(z, scale)["x0"], rtol=1e-6, atol=1e-6)
    per_call = num_windows if windows_per_call is None else min(windows_per_call, num_windows)
    assert row_sizes[0] == batch_size * per_call


def test_window_chunks_reject_a_bad_layout_and_size():
    z = jnp.zeros((7, 2))
    with pytest.raises(ValueError, match=r"\[B \* N, \.\.\.\] layout"):
        multidiffusion.map_window_chunks(lambda rows: rows, 3, 1, z)
    with pytest.raises(ValueError, match="at least 1"):
        multidiffusion.map_window_chunks(lambda rows: rows, 7, 0, z)


def test_a_learned_variance_is_fused_with_the_x0_predictions():
    """Windows 0-3 and 2-5 of a 6-frame clip; each window predicts its own constant x0 (1, 3) and variance
    interpolation (-0.5, 0.5): frames 2-3 average both, the others keep their window's values."""
    starts, window_length = (0, 2), 4

    def windowed_denoise_fn(z_windows, logsnr_windows, condition_windows):
        del logsnr_windows, condition_windows
        window = jnp.arange(z_windows.shape[0]) % len(starts)  # batch-major: row b * N + i is window i
        shape = (-1,) + (1,) * (z_windows.ndim - 1)
        return samplers.LearnedVariance(jnp.ones_like(z_windows) * (1.0 + 2.0 * window).reshape(shape),
                                        jnp.ones_like(z_windows) * (window - 0.5).reshape(shape))

    denoise_fn = multidiffusion.multidiffusion_denoiser(windowed_denoise_fn, starts, window_length)
    fused = denoise_fn(jnp.zeros((2, 6, 2, 2, 3)), jnp.zeros((2,)))
    assert isinstance(fused, samplers.LearnedVariance)
    np.testing.assert_allclose(fused.x0[:, :, 0, 0, 0], np.tile([1, 1, 2, 2, 3, 3], (2, 1)), atol=1e-6)
    np.testing.assert_allclose(fused.variance_interpolation[:, :, 0, 0, 0],
                               np.tile([-0.5, -0.5, 0, 0, 0.5, 0.5], (2, 1)), atol=1e-6)
