"""Learning-rate schedules against closed forms; EMA warmup."""

import math

import numpy as np
import pytest

from lumiere_jax.train import optimizer as optimizer_lib


def lr_at(config, steps, num_train_steps=100):
    schedule = optimizer_lib.learning_rate_schedule(config, num_train_steps)
    return np.array([float(schedule(step)) for step in steps])


def test_cosine_after_linear_warmup():
    config = optimizer_lib.OptimizerConfig(learning_rate=1e-3, warmup_steps=10, decay="cosine", final_fraction=0.1)
    steps = [0, 5, 10, 55, 100]
    expected = [0.0, 5e-4, 1e-3]
    for step in (55, 100):  # decay over num_train_steps - warmup = 90 steps
        progress = (step - 10) / 90
        expected.append(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))))
    np.testing.assert_allclose(lr_at(config, steps), expected, rtol=1e-5, atol=1e-9)


def test_linear_constant_and_rsqrt_decays():
    linear = optimizer_lib.OptimizerConfig(learning_rate=2.0, warmup_steps=0, decay="linear", decay_steps=50)
    np.testing.assert_allclose(lr_at(linear, [0, 25, 50, 80]), [2.0, 1.0, 0.0, 0.0], atol=1e-6)
    constant = optimizer_lib.OptimizerConfig(learning_rate=2.0, warmup_steps=4, decay="constant")
    np.testing.assert_allclose(lr_at(constant, [2, 4, 99]), [1.0, 2.0, 2.0], atol=1e-6)
    rsqrt = optimizer_lib.OptimizerConfig(learning_rate=1.0, warmup_steps=4, decay="rsqrt")
    np.testing.assert_allclose(lr_at(rsqrt, [4, 16]), [1.0, math.sqrt(4 / 16)], rtol=1e-6)


def test_ema_decay_warms_up_then_caps():
    np.testing.assert_allclose(float(optimizer_lib.ema_decay_at(0, 0.9999)), 0.1, rtol=1e-6)
    np.testing.assert_allclose(float(optimizer_lib.ema_decay_at(90, 0.9999)), 91 / 100, rtol=1e-6)
    np.testing.assert_allclose(float(optimizer_lib.ema_decay_at(10**7, 0.99)), 0.99, rtol=1e-6)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="unknown learning-rate decay 'exp'"):
        optimizer_lib.OptimizerConfig(decay="exp")
    with pytest.raises(ValueError, match=r"ema_decay=1.0 must lie in \[0, 1\)"):
        optimizer_lib.OptimizerConfig(ema_decay=1.0)
