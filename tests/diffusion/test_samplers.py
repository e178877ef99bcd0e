"""Samplers against closed forms: Gaussian data with its exact denoiser must be sampled correctly."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumiere_jax.diffusion import losses
from lumiere_jax.diffusion import samplers
from lumiere_jax.diffusion import schedules

NUM_SAMPLES = 16384
SCHEDULE = schedules.get_schedule("cosine")


def _assert_matches_distribution(samples, data, tolerance=0.02):
    samples = np.asarray(samples, np.float64)
    np.testing.assert_allclose(samples.mean(axis=0), data.mean, atol=tolerance)
    np.testing.assert_allclose(np.cov(samples, rowvar=False), data.covariance, atol=tolerance)


@functools.partial(jax.jit, static_argnames=("denoise_fn", "num_steps", "t_start", "sampler", "spacing"))
def _sample(denoise_fn, rng, z_init, num_steps, t_start, sampler, eta, spacing=None):
    return samplers.sample(denoise_fn, samplers.keys_per_row(rng, z_init.shape[0]), z_init, SCHEDULE, num_steps,
                           t_start=t_start, sampler=sampler, eta=eta, spacing=spacing)


@pytest.mark.parametrize("sampler,eta", [("ddim", 0.0), ("ddim", 1.0), ("ddpm", 0.0)])
def test_sampling_from_noise_matches_gaussian_data(gaussian_data, sampler, eta):
    init_rng, sample_rng = jax.random.split(jax.random.PRNGKey(0))
    z_init = jax.random.normal(init_rng, (NUM_SAMPLES, 3))
    samples = _sample(gaussian_data.denoise, sample_rng, z_init, 200, 1.0, sampler, eta)
    _assert_matches_distribution(samples, gaussian_data)


def test_sdedit_start_from_noised_data_matches_gaussian_data(gaussian_data):
    t_start = 0.6
    x0 = gaussian_data.sample(np.random.default_rng(0), NUM_SAMPLES)
    eps = jax.random.normal(jax.random.PRNGKey(1), x0.shape)
    z_init = losses.noisy_sample(x0, eps, SCHEDULE(t_start))
    samples = _sample(gaussian_data.denoise, jax.random.PRNGKey(2), z_init, 120, t_start, "ddim", 0.0)
    _assert_matches_distribution(samples, gaussian_data)
    # Not the identity: SDEdit at t_start = 0.6 moves the samples well away from their starting data.
    assert np.mean(np.abs(np.asarray(samples) - x0)) > 0.05


def test_wrong_denoiser_is_detected(gaussian_data):
    """The distribution check has teeth: a denoiser that ignores the covariance fails it."""

    def isotropic_denoise(z, logsnr):
        wrong = type(gaussian_data)(mean=gaussian_data.mean, covariance=np.eye(3) * 0.2)
        return wrong.denoise(z, logsnr)

    z_init = jax.random.normal(jax.random.PRNGKey(0), (NUM_SAMPLES, 3))
    samples = _sample(isotropic_denoise, jax.random.PRNGKey(1), z_init, 50, 1.0, "ddim", 0.0)
    with pytest.raises(AssertionError):
        _assert_matches_distribution(samples, gaussian_data)


def test_ddpm_step_equals_ddim_with_eta_one():
    rng = np.random.default_rng(0)
    z, x0_hat, noise = (rng.normal(size=(4, 5, 3)).astype(np.float32) for _ in range(3))
    logsnr_t = np.array([-3.0, -1.0, 0.5, 2.0], np.float32)
    logsnr_s = logsnr_t + np.array([0.1, 1.0, 2.5, 4.0], np.float32)
    np.testing.assert_allclose(
        samplers.ddpm_step(z, x0_hat, logsnr_t, logsnr_s, noise),
        samplers.ddim_step(z, x0_hat, logsnr_t, logsnr_s, 1.0, noise), rtol=1e-5, atol=1e-5)


def test_ddim_step_with_exact_x0_and_eps_lands_on_forward_process():
    """With eta = 0 and the true x0, DDIM re-noises x0 with the same eps: z_s = alpha_s x0 + sigma_s eps."""
    rng = np.random.default_rng(1)
    x0, eps = rng.normal(size=(2, 6, 4)).astype(np.float32), rng.normal(size=(2, 6, 4)).astype(np.float32)
    logsnr_t, logsnr_s = np.array([-2.0, 0.0], np.float32), np.array([1.0, 3.0], np.float32)
    z_t = losses.noisy_sample(x0, eps, logsnr_t)
    z_s = samplers.ddim_step(z_t, x0, logsnr_t, logsnr_s, 0.0, jnp.zeros_like(z_t))
    np.testing.assert_allclose(z_s, losses.noisy_sample(x0, eps, logsnr_s), rtol=1e-5, atol=1e-5)


def test_posterior_variance_matches_gaussian_conditioning():
    """Var(z_s | z_t, x0) from joint-Gaussian conditioning of the forward process (z_t = a_ts z_s + noise)."""
    logsnr_t, logsnr_s = -1.0, 2.0
    alpha_t, sigma_t = (float(v) for v in schedules.alpha_sigma(logsnr_t))
    alpha_s, sigma_s = (float(v) for v in schedules.alpha_sigma(logsnr_s))
    # Given x0: Cov(z_s, z_t) = alpha_t / alpha_s * sigma_s^2.
    covariance_st = alpha_t / alpha_s * sigma_s**2
    expected = sigma_s**2 - covariance_st**2 / sigma_t**2
    np.testing.assert_allclose(samplers.posterior_variance(logsnr_t, logsnr_s), expected, rtol=1e-5)


def test_time_grid_and_errors():
    np.testing.assert_allclose(samplers.time_grid(4, 0.8), [0.8, 0.6, 0.4, 0.2, 0.0], atol=1e-7)
    np.testing.assert_allclose(samplers.time_grid(4, 0.8, "quadratic"), [0.8, 0.45, 0.2, 0.05, 0.0], atol=1e-7)
    with pytest.raises(ValueError, match="unknown time spacing"):
        samplers.time_grid(4, 1.0, "cubic")
    with pytest.raises(ValueError, match="num_steps"):
        samplers.time_grid(0)
    with pytest.raises(ValueError, match="t_start"):
        samplers.time_grid(10, 1.5)
    with pytest.raises(ValueError, match="unknown sampler"):
        samplers.sample(lambda z, logsnr: z, jax.random.split(jax.random.key(0), 1), jnp.zeros((1, 2)), SCHEDULE, 3,
                        sampler="euler")
    with pytest.raises(ValueError, match=r"one typed key per row, shape \(3,\).*jax.random.split"):
        samplers.sample(lambda z, logsnr: z, jax.random.key(0), jnp.zeros((3, 2)), SCHEDULE, 3)


def test_sample_calls_denoiser_once_per_step_with_batch_logsnr():
    seen = []

    def recording_denoise(z, logsnr):
        seen.append(logsnr.shape)
        return jnp.zeros_like(z)

    out = samplers.sample(recording_denoise, jax.random.split(jax.random.key(0), 3), jnp.ones((3, 2, 4)),
                          SCHEDULE, 5)
    # Traced once inside scan, with one log-SNR per example.
    assert seen == [(3,)]
    np.testing.assert_array_equal(out, np.zeros((3, 2, 4)))


def test_low_precision_state_with_float32_denoiser(gaussian_data):
    """A bfloat16 state stays bfloat16 through the scan even when the denoiser answers in float32."""
    z_init = jax.random.normal(jax.random.PRNGKey(0), (8, 3), jnp.bfloat16)
    keys = jax.random.split(jax.random.key(1), 8)
    out = samplers.sample(gaussian_data.denoise, keys, z_init, SCHEDULE, 4, sampler="ddpm")
    assert out.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(out, np.float32)))


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 0.7)])
def test_stochastic_rows_do_not_depend_on_batch_mates(gaussian_data, sampler, eta):
    """A row's step noise comes from its own key: alone, in a bigger batch, or at another position, it
    samples the same output (the denoiser treats rows independently)."""
    keys = jax.random.split(jax.random.key(3), 6)
    z_init = jax.random.normal(jax.random.key(4), (6, 3))

    def run(rows):
        rows = jnp.asarray(rows)
        return np.asarray(samplers.sample(gaussian_data.denoise, keys[rows], z_init[rows], SCHEDULE, 12,
                                          sampler=sampler, eta=eta))

    batch = run([0, 1, 2, 3])
    alone = run([2])
    moved = run([5, 4, 2, 0, 1])
    np.testing.assert_allclose(alone[0], batch[2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(moved[2], batch[2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(moved[3:], batch[:2], rtol=1e-5, atol=1e-5)
    # The step noise matters: another key for row 2 changes its sample.
    other = np.asarray(samplers.sample(gaussian_data.denoise, keys[jnp.array([5])], z_init[jnp.array([2])],
                                       SCHEDULE, 12, sampler=sampler, eta=eta))
    assert np.max(np.abs(other[0] - batch[2])) > 1e-2


def _exact_flow_map(data, z_init: np.ndarray, logsnr: float) -> np.ndarray:
    """The probability-flow ODE's map from `z_init` at `logsnr` to t = 0 for Gaussian data, in NumPy.

    In the covariance's eigenbasis the coordinates are independent Gaussians; the flow keeps each one's
    standardised value: `x0_k = m_k + sqrt(l_k) (z_k - alpha m_k) / sqrt(alpha^2 l_k + sigma^2)`.
    """
    eigenvalues, eigenvectors = np.linalg.eigh(data.covariance)
    alpha, sigma = np.sqrt(1 / (1 + np.exp(-logsnr))), np.sqrt(1 / (1 + np.exp(logsnr)))
    coordinates = (np.asarray(z_init, np.float64) - alpha * data.mean) @ eigenvectors
    standardised = coordinates / np.sqrt(alpha**2 * eigenvalues + sigma**2)
    return data.mean + (standardised * np.sqrt(eigenvalues)) @ eigenvectors.T


def _flow_map_error(data, sampler: str, num_steps: int, spacing: str, t_start: float = 1.0) -> float:
    z_init = jax.random.normal(jax.random.PRNGKey(11), (4096, 3))
    samples = _sample(data.denoise, jax.random.PRNGKey(12), z_init, num_steps, t_start, sampler, 0.0, spacing)
    exact = _exact_flow_map(data, np.asarray(z_init), float(SCHEDULE(t_start)))
    return float(np.sqrt(np.mean(np.square(np.asarray(samples, np.float64) - exact))))


@pytest.mark.parametrize("num_steps,spacing", [(10, "quadratic"), (15, "quadratic"), (25, "quadratic"),
                                               (15, "uniform"), (25, "uniform")])
def test_multistep_solver_error_is_a_third_of_ddims_on_the_exact_flow_map(gaussian_data, num_steps, spacing):
    """DPM-Solver++(2M) against the closed-form ODE map: at most a third of DDIM's error at equal steps on
    the same grid. (Uniform grid at 10 steps: about 0.4 of DDIM's, so the solver defaults to quadratic.)"""
    ddim = _flow_map_error(gaussian_data, "ddim", num_steps, spacing)
    multistep = _flow_map_error(gaussian_data, "dpmpp_2m", num_steps, spacing)
    assert multistep <= ddim / 3, (num_steps, multistep, ddim)


def test_multistep_solver_converges_to_the_exact_flow_map(gaussian_data):
    errors = [_flow_map_error(gaussian_data, "dpmpp_2m", steps, "quadratic") for steps in (25, 100, 400)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3, errors
    # SDEdit starts (t_start < 1) integrate the same ODE from there.
    assert _flow_map_error(gaussian_data, "dpmpp_2m", 200, "uniform", t_start=0.6) < 2e-3


def test_multistep_weights_follow_the_log_snr_step_ratio():
    """w_i = h_i / (2 h_{i-1}) in lambda = logsnr / 2 (a uniform grid in lambda gives 1/2 after the first)."""
    np.testing.assert_allclose(samplers.multistep_weights(jnp.array([-4.0, -2.0, 0.0, 2.0])), [0.0, 0.5, 0.5])
    np.testing.assert_allclose(samplers.multistep_weights(jnp.array([0.0, 1.0, 4.0])), [0.0, 1.5])
