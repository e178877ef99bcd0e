"""eps / x0 / v conversions: exact round trips and consistent targets."""

import numpy as np
import pytest

from lumiere_jax.diffusion import losses
from lumiere_jax.diffusion import parameterization as param_lib

RNG = np.random.default_rng(0)
X0 = RNG.uniform(-1, 1, size=(3, 4, 5, 5, 3)).astype(np.float32)  # video [B, T, H, W, C]
EPS = RNG.normal(size=X0.shape).astype(np.float32)
LOGSNR = np.array([-4.0, 0.3, 5.0], np.float32)


@pytest.mark.parametrize("parameterization", param_lib.PARAMETERIZATIONS)
def test_target_converts_back_to_the_data(parameterization):
    z = losses.noisy_sample(X0, EPS, LOGSNR)
    prediction = param_lib.target(X0, EPS, LOGSNR, parameterization)
    np.testing.assert_allclose(param_lib.to_x0(prediction, z, LOGSNR, parameterization), X0, atol=2e-4)
    np.testing.assert_allclose(param_lib.from_x0(X0, z, LOGSNR, parameterization), prediction, atol=2e-4)


@pytest.mark.parametrize("parameterization", param_lib.PARAMETERIZATIONS)
def test_from_x0_inverts_to_x0_for_any_prediction(parameterization):
    z = RNG.normal(size=X0.shape).astype(np.float32)
    prediction = RNG.normal(size=X0.shape).astype(np.float32)
    x0 = param_lib.to_x0(prediction, z, LOGSNR, parameterization)
    np.testing.assert_allclose(param_lib.from_x0(x0, z, LOGSNR, parameterization), prediction, rtol=1e-4, atol=2e-4)


def test_pairwise_conversions_agree_with_definitions():
    alpha, sigma = param_lib.alpha_sigma_like(LOGSNR, X0)
    assert alpha.shape == (3, 1, 1, 1, 1)
    z = alpha * X0 + sigma * EPS
    v = alpha * EPS - sigma * X0
    np.testing.assert_allclose(param_lib.v_from_x0_eps(X0, EPS, alpha, sigma), v, atol=1e-6)
    np.testing.assert_allclose(param_lib.x0_from_v(z, v, alpha, sigma), X0, atol=1e-5)
    np.testing.assert_allclose(param_lib.eps_from_v(z, v, alpha, sigma), EPS, atol=1e-5)
    np.testing.assert_allclose(param_lib.eps_from_x0(z, X0, alpha, sigma), EPS, atol=1e-4)
    np.testing.assert_allclose(param_lib.x0_from_eps(z, EPS, alpha, sigma), X0, atol=1e-4)
    np.testing.assert_allclose(param_lib.v_from_x0(z, X0, alpha, sigma), v, atol=1e-4)


def test_broadcasting_for_images_and_scalars():
    image = X0[:, 0]  # [B, H, W, C]
    assert param_lib.broadcast_to_rank(LOGSNR, image.ndim).shape == (3, 1, 1, 1)
    assert param_lib.broadcast_to_rank(np.float32(1.0), image.ndim).shape == ()
    with pytest.raises(ValueError, match=r"\[B\]"):
        param_lib.broadcast_to_rank(np.zeros((3, 2)), 4)


def test_unknown_parameterization_is_rejected():
    with pytest.raises(ValueError, match="unknown parameterization 'score'"):
        param_lib.target(X0, EPS, LOGSNR, "score")



def test_preconditioning_for_unit_data_is_the_v_parameterization():
    z = RNG.normal(size=X0.shape).astype(np.float32)
    raw = RNG.normal(size=X0.shape).astype(np.float32)
    alpha, sigma = param_lib.alpha_sigma_like(LOGSNR, z)
    np.testing.assert_allclose(param_lib.preconditioned_x0(raw, z, alpha, sigma, 1.0),
                               param_lib.to_x0(raw, z, LOGSNR, "v"), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(param_lib.preconditioned_input_scale(alpha, sigma, 1.0), 1.0, rtol=1e-6)


@pytest.mark.parametrize("data_std", [0.05, 0.5, 2.0])
def test_preconditioning_matches_edm_in_its_own_variables(data_std):
    """Against Karras et al. 2022 written in their variance-exploding variables (NumPy): `x = z / alpha` has noise
    `s = sigma / alpha`; `D(x) = c_skip x + c_out F(c_in x)` with `c_skip = sd^2 / (s^2 + sd^2)`,
    `c_out = s sd / sqrt(s^2 + sd^2)`, `c_in = 1 / sqrt(s^2 + sd^2)`; our raw output is `-F`, our input `c_in x`."""
    z = RNG.normal(size=X0.shape).astype(np.float32)
    raw = RNG.normal(size=X0.shape).astype(np.float32)
    alpha, sigma = (np.asarray(a, np.float64) for a in param_lib.alpha_sigma_like(LOGSNR, z))
    noise = sigma / alpha
    c_skip = data_std**2 / (noise**2 + data_std**2)
    c_out = noise * data_std / np.sqrt(noise**2 + data_std**2)
    c_in = 1 / np.sqrt(noise**2 + data_std**2)
    expected = c_skip * (z / alpha) + c_out * (-raw)
    np.testing.assert_allclose(param_lib.preconditioned_x0(raw, z, alpha, sigma, data_std), expected,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(z / param_lib.preconditioned_input_scale(alpha, sigma, data_std), c_in * z / alpha,
                               rtol=1e-5, atol=1e-6)
