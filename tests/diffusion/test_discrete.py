"""IF's discrete diffusion process against diffusers' DDPMScheduler (IF's configuration) and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.schedulers import scheduling_ddpm

from lumiere_jax.diffusion import discrete, guidance, samplers, schedules

IF_SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="learned_range",
                    prediction_type="epsilon", thresholding=True, dynamic_thresholding_ratio=0.95,
                    sample_max_value=1.5)


def test_alphas_cumprod_match_diffusers():
    np.testing.assert_allclose(schedules.squared_cosine_alphas_cumprod(),
                               DDPMScheduler(**IF_SCHEDULER).alphas_cumprod.numpy(), rtol=2e-6, atol=0)


@pytest.mark.parametrize("num_steps", [4, 27, 1000])
def test_leading_timesteps_match_diffusers(num_steps):
    scheduler = DDPMScheduler(**IF_SCHEDULER)
    scheduler.set_timesteps(num_steps)
    np.testing.assert_array_equal(discrete.leading_timesteps(num_steps), scheduler.timesteps.numpy())


def test_timestep_from_logsnr_inverts_the_table():
    alphas_cumprod = schedules.squared_cosine_alphas_cumprod()
    timesteps = jnp.array([0, 1, 250, 998, 999])
    logsnr = schedules.timestep_logsnr(timesteps, alphas_cumprod)
    assert np.all(np.diff(np.asarray(logsnr)) < 0)
    np.testing.assert_allclose(discrete.timestep_from_logsnr(logsnr, alphas_cumprod), timesteps, atol=1e-3)
    midpoint = discrete.timestep_from_logsnr((logsnr[1] + logsnr[2]) / 2, alphas_cumprod)
    assert 1 < float(midpoint) < 250
    assert float(schedules.timestep_logsnr(jnp.array([-1]), alphas_cumprod)[0]) == np.inf


def test_learned_range_variance_spans_posterior_and_beta():
    logsnr_t, logsnr_s = jnp.array([-2.0]), jnp.array([1.0])
    lowest = samplers.learned_range_log_variance(-jnp.ones((1, 3)), logsnr_t, logsnr_s)
    highest = samplers.learned_range_log_variance(jnp.ones((1, 3)), logsnr_t, logsnr_s)
    alpha_t2, alpha_s2 = 1 / (1 + np.exp(2.0)), 1 / (1 + np.exp(-1.0))
    np.testing.assert_allclose(np.exp(highest), np.full((1, 3), 1 - alpha_t2 / alpha_s2), rtol=1e-5)
    posterior = float(samplers.posterior_variance(logsnr_t, logsnr_s)[0])
    np.testing.assert_allclose(np.exp(lowest), np.full((1, 3), posterior), rtol=1e-5)
    assert posterior < 1 - alpha_t2 / alpha_s2


def test_last_step_returns_the_thresholded_x0_without_noise():
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.standard_normal((2, 4, 4, 3)), jnp.float32)
    output = jnp.asarray(rng.standard_normal((2, 4, 4, 6)), jnp.float32)
    logsnr_t = schedules.timestep_logsnr(jnp.array([0, 0]), schedules.squared_cosine_alphas_cumprod())
    stepped = discrete.learned_range_step(z, output, logsnr_t, jnp.full((2,), jnp.inf), noise=jnp.ones_like(z))
    np.testing.assert_allclose(stepped, discrete.x0_from_output(z, output, logsnr_t), atol=1e-6)
    assert float(jnp.max(jnp.abs(stepped))) <= 1.0 + 1e-6


def test_steps_match_diffusers_on_random_outputs():
    """Each step of a 4-step IF sampler from fixed model outputs: ours and DDPMScheduler.step agree."""
    scheduler = DDPMScheduler(**IF_SCHEDULER)
    scheduler.set_timesteps(4)
    alphas_cumprod = schedules.squared_cosine_alphas_cumprod()
    rng = np.random.default_rng(1)
    theirs = torch.from_numpy(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    ours = jnp.asarray(theirs.numpy().transpose(0, 2, 3, 1))
    generator, noise_generator = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    timesteps = list(scheduler.timesteps.numpy()) + [-1]
    for t, s in zip(timesteps[:-1], timesteps[1:]):
        output = torch.from_numpy(rng.uniform(-1.5, 1.5, (2, 6, 8, 8)).astype(np.float32))
        noise = torch.randn((2, 3, 8, 8), generator=noise_generator) if t > 0 else torch.zeros(2, 3, 8, 8)
        theirs = scheduler.step(output, int(t), theirs, generator=generator).prev_sample
        logsnr_t, logsnr_s = (schedules.timestep_logsnr(jnp.array([step] * 2), alphas_cumprod) for step in (t, s))
        ours = discrete.learned_range_step(ours, jnp.asarray(output.numpy().transpose(0, 2, 3, 1)), logsnr_t,
                                           logsnr_s, jnp.asarray(noise.numpy().transpose(0, 2, 3, 1)))
        np.testing.assert_allclose(ours, theirs.numpy().transpose(0, 2, 3, 1), atol=1e-4, rtol=1e-4)


def test_continuous_schedule_hits_the_discrete_log_snrs():
    schedule = schedules.get_schedule("if_squared_cosine")
    timesteps = jnp.array([0, 10, 500, 999])
    expected = schedules.timestep_logsnr(timesteps, schedules.squared_cosine_alphas_cumprod())
    np.testing.assert_allclose(schedule(timesteps / 999), expected, rtol=1e-5)
    assert np.all(np.diff(np.asarray(schedule(jnp.linspace(0, 1, 50)))) < 0)


def _toy_if_output(z_nhwc: np.ndarray, timestep: float, offset: float) -> np.ndarray:
    """A fixed stand-in for an IF U-Net: eps and variance channels from z and the timestep, `[.., 3] -> [.., 6]`."""
    eps = 0.4 * z_nhwc + offset * np.sin(timestep / 97.0 + np.arange(3))
    variance = np.tanh(0.5 * z_nhwc[..., ::-1] + timestep / 1000.0 - 0.5 + offset)
    return np.concatenate([eps, variance], axis=-1).astype(np.float32)


def test_guided_sampler_with_learned_variance_matches_diffusers_if_steps(monkeypatch):
    """Our ancestral sampler, driven through guided_denoiser with a learned variance (the sampling job's path),
    against DDPMScheduler (IF's configuration) with IF's pipeline guidance (eps guided, the conditional's
    variance) on IF timesteps 999, 666, 333, the same step noise, and the model called at the same points."""

    weight, num_steps, rows = 2.5, 3, 2
    alphas_cumprod = schedules.squared_cosine_alphas_cumprod()
    rng = np.random.default_rng(3)
    z_init = rng.standard_normal((rows, 8, 8, 3)).astype(np.float32)
    keys = jax.random.split(jax.random.key(5), rows)
    noises = [np.asarray(samplers.step_noise(keys, jnp.int32(i), z_init.shape[1:], jnp.float32))
              for i in range(num_steps)]

    def model_fn(z, logsnr, cond):  # cond["offset"]: [B], as text embeddings would be
        timestep = discrete.timestep_from_logsnr(logsnr, alphas_cumprod)
        return jax.pure_callback(
            lambda z, t, offset: np.stack([_toy_if_output(z[b], float(t[b]), float(offset[b]))
                                           for b in range(len(z))]),
            jax.ShapeDtypeStruct(z.shape[:-1] + (6,), jnp.float32), z, timestep, cond["offset"])

    denoise_fn = guidance.guided_denoiser(model_fn, {"offset": jnp.full((rows,), 0.3)},
                                          {"offset": jnp.full((rows,), -0.2)}, weight, "eps",
                                          threshold_percentile=None, learned_variance=True)
    if_thresholded = lambda z, logsnr: samplers.map_x0(  # noqa: E731 -- IF's thresholding: 95th percentile, cap 1.5
        lambda x0: guidance.dynamic_threshold(x0, discrete.IF_THRESHOLD_PERCENTILE, discrete.IF_THRESHOLD_MAX_SCALE),
        denoise_fn(z, logsnr))
    ours = samplers.sample(if_thresholded, keys, jnp.asarray(z_init), schedules.get_schedule("if_squared_cosine"),
                           num_steps, sampler="ddpm")

    scheduler = DDPMScheduler(**IF_SCHEDULER)
    scheduler.set_timesteps(timesteps=[999, 666, 333, 0])
    step_noises = iter(torch.from_numpy(noise.transpose(0, 3, 1, 2).copy()) for noise in noises)
    monkeypatch.setattr(scheduling_ddpm, "randn_tensor", lambda *args, **kwargs: next(step_noises))
    sample = torch.from_numpy(z_init.transpose(0, 3, 1, 2).copy())
    for t in (999, 666, 333):
        z_nhwc = sample.numpy().transpose(0, 2, 3, 1)
        conditional = np.stack([_toy_if_output(z_nhwc[b], t, 0.3) for b in range(rows)])
        unconditional = np.stack([_toy_if_output(z_nhwc[b], t, -0.2) for b in range(rows)])
        eps = unconditional[..., :3] + weight * (conditional[..., :3] - unconditional[..., :3])
        output = np.concatenate([eps, conditional[..., 3:]], axis=-1).transpose(0, 3, 1, 2)
        step = scheduler.step(torch.from_numpy(output.copy()), t, sample)
        sample = step.prev_sample
    # Our output is the last call's x0 (at t = 333); the scheduler's step there predicts the same x0.
    np.testing.assert_allclose(np.asarray(ours), step.pred_original_sample.numpy().transpose(0, 2, 3, 1),
                               atol=2e-4, rtol=1e-4)
    # The learned variance made a difference: the posterior variance alone gives another sample.
    plain = samplers.sample(lambda z, logsnr: samplers.x0_of(if_thresholded(z, logsnr)), keys, jnp.asarray(z_init),
                            schedules.get_schedule("if_squared_cosine"), num_steps, sampler="ddpm")
    assert float(jnp.max(jnp.abs(plain - ours))) > 1e-2
