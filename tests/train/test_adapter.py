"""How batches become model inputs for each stage, against NumPy references."""

import dataclasses

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toy
from lumiere_jax.stages import adapter as adapter_lib
from lumiere_jax.stages.adapter import area_downsample

VIDEO = np.random.default_rng(0).uniform(-1, 1, (2, 6, 8, 8, 3)).astype(np.float32)


def test_area_downsample_matches_block_means():
    expected = VIDEO.reshape(2, 6, 4, 2, 4, 2, 3).mean(axis=(3, 5))
    np.testing.assert_allclose(area_downsample(jnp.asarray(VIDEO), 4), expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="cannot be area-downsampled to 3x3"):
        area_downsample(jnp.asarray(VIDEO), 3)


def test_image_stage_takes_one_frame_per_clip():
    adapter = toy.toy_adapter(stage="t2i")
    inputs = adapter.inputs_from_batch({"video": jnp.asarray(VIDEO)}, jax.random.key(1))
    assert inputs.x0.shape == (2, 8, 8, 3)
    for example in range(2):
        assert any(np.array_equal(inputs.x0[example], VIDEO[example, t]) for t in range(6))


def test_image_sr_stage_takes_one_frame_and_downsamples():
    adapter = toy.toy_adapter(stage="sr")
    inputs = adapter.inputs_from_batch({"video": jnp.asarray(VIDEO)}, jax.random.key(6))
    assert inputs.x0.shape == (2, 8, 8, 3) and inputs.low_res.shape == (2, 4, 4, 3)
    for example in range(2):
        assert any(np.array_equal(inputs.x0[example], VIDEO[example, t]) for t in range(6))
    expected = np.asarray(inputs.x0).reshape(2, 4, 2, 4, 2, 3).mean((2, 4))
    np.testing.assert_allclose(inputs.low_res, expected, atol=1e-7, rtol=1e-6)


def test_ssr_stage_cuts_windows_and_downsamples():
    adapter = toy.toy_adapter(stage="ssr", frames=4)
    inputs = adapter.inputs_from_batch({"video": jnp.asarray(VIDEO)}, jax.random.key(2))
    assert inputs.x0.shape == (2, 4, 8, 8, 3) and inputs.low_res.shape == (2, 4, 4, 4, 3)
    for example in range(2):
        starts = [s for s in range(3) if np.array_equal(inputs.x0[example], VIDEO[example, s:s + 4])]
        assert len(starts) == 1
    expected = np.asarray(inputs.x0).reshape(2, 4, 4, 2, 4, 2, 3).mean((3, 5))
    np.testing.assert_allclose(inputs.low_res, expected, atol=1e-7, rtol=1e-6)


def test_conditional_stage_defaults_to_image_to_video():
    adapter = toy.toy_adapter(stage="conditional")
    inputs = adapter.inputs_from_batch({"video": jnp.asarray(VIDEO)}, jax.random.key(3))
    condition, mask = inputs.channel_condition[..., :3], inputs.channel_condition[..., 3:]
    assert inputs.x0.shape == (2, 4, 8, 8, 3)  # a 4-frame window of the 6-frame clips
    np.testing.assert_array_equal(mask[:, 0], 1.0)
    np.testing.assert_array_equal(mask[:, 1:], 0.0)
    np.testing.assert_array_equal(condition[:, 0], inputs.x0[:, 0])
    np.testing.assert_array_equal(condition[:, 1:], 0.0)
    assert adapter.model_input(inputs.x0, inputs).shape[-1] == 7


def test_conditional_stage_uses_given_masks_of_its_window():
    adapter = toy.toy_adapter(stage="conditional")
    video = VIDEO[:, :4]
    known = np.zeros((2, 4, 8, 8, 1), np.float32)
    known[:, 0] = 1.0
    known[:, 1:, :4] = 1.0
    batch = {"video": video, "condition": video * known, "condition_mask": known}
    inputs = adapter.inputs_from_batch(jax.tree.map(jnp.asarray, batch), jax.random.key(4))
    np.testing.assert_array_equal(inputs.x0, video)
    np.testing.assert_array_equal(inputs.channel_condition[..., 3:], known)
    np.testing.assert_array_equal(inputs.channel_condition[..., :3], video * known)


def test_conditional_stage_refuses_masks_of_longer_clips():
    """A window cut from masks of a longer clip loses the known first frame: masks must be drawn on the window."""
    adapter = toy.toy_adapter(stage="conditional")
    known = np.zeros((2, 6, 8, 8, 1), np.float32)
    known[:, 0] = 1.0
    batch = {"video": VIDEO, "condition": VIDEO * known, "condition_mask": known}
    with pytest.raises(ValueError, match="drawn on clips of 6 frames but the model sees windows of 4.*"
                                         "ConditionalInputs.window_frames = 4"):
        adapter.inputs_from_batch(jax.tree.map(jnp.asarray, batch), jax.random.key(4))


@pytest.mark.parametrize("stage", ["stunet", "ssr", "conditional"])
def test_video_stages_refuse_clips_shorter_than_the_model(stage):
    adapter = toy.toy_adapter(stage=stage, frames=8)
    with pytest.raises(ValueError, match="clips of 6 frames are shorter than the model's 8 frames"):
        adapter.inputs_from_batch({"video": jnp.asarray(VIDEO)}, jax.random.key(5))


def test_sample_shape_must_match_stage():
    with pytest.raises(ValueError, match="stage 'stunet' needs sample_shape of rank 4"):
        adapter_lib.ModelAdapter(name="x", module=toy.ToyDenoiser(), stage="stunet", text_encoder=toy.ToyTextEncoder(),
                                 sample_shape=(8, 8, 3))


class _ZeroResidualOracle(flax.linen.Module):
    """The exact output for a residual that is zero, preconditioned for residuals of std `data_std`: it sees
    `x = sigma * eps / scale` and must make `x0 = c_skip * z_r - c_out * raw` zero, so `raw = data_std * (alpha /
    sigma) * x`. The test's clean data is its low-res input upsampled, so that is what an upsample-residual
    model sees."""

    data_std: float

    @flax.linen.compact
    def __call__(self, x, logsnr, text_embeddings, text_mask, low_res=None, noise_aug_logsnr=None, train=False):
        ratio = jnp.exp(logsnr / 2)  # alpha / sigma
        return self.data_std * ratio.reshape((-1,) + (1,) * (x.ndim - 1)) * x


@pytest.mark.parametrize("residual_std", [0.1, 1.0, None])
def test_upsample_residual_model_is_seen_as_a_model_of_x0(residual_std):
    """Flat-colour frames (their bilinear upsample is themselves): a model that predicts a zero residual exactly
    is, through an upsample-residual adapter, the exact v of the full data (NumPy closed form); the same model
    without the option is wrong."""
    rng = np.random.default_rng(3)
    colours = rng.uniform(-1, 1, (2, 4, 1, 1, 3)).astype(np.float32)  # one colour per frame
    low_res = np.broadcast_to(colours, (2, 4, 4, 4, 3))
    x0 = np.broadcast_to(colours, (2, 4, 8, 8, 3))
    eps = rng.normal(size=x0.shape).astype(np.float32)
    logsnr = np.array([-6.0, 3.0], np.float32)
    alpha = np.sqrt(1 / (1 + np.exp(-logsnr))).reshape(2, 1, 1, 1, 1)
    sigma = np.sqrt(1 / (1 + np.exp(logsnr))).reshape(2, 1, 1, 1, 1)
    z = alpha * x0 + sigma * eps
    adapter = dataclasses.replace(toy.toy_adapter(stage="ssr", frames=4),
                                  module=_ZeroResidualOracle(residual_std or 1.0), upsample_residual_std=residual_std)
    text = jnp.zeros((2, toy.TEXT_LENGTH, 16)), jnp.ones((2, toy.TEXT_LENGTH), bool)
    prediction = adapter.apply({}, jnp.asarray(z), jnp.asarray(logsnr),
                               adapter_lib.ModelInputs(x0=jnp.asarray(x0), low_res=jnp.asarray(low_res)), *text,
                               noise_aug_logsnr=jnp.full((2,), 5.0), train=False)
    exact = alpha * eps - sigma * x0
    error = np.abs(np.asarray(prediction) - exact).max()
    assert error < 1e-4 if residual_std else error > 0.1


def test_upsample_residual_is_refused_outside_the_sr_stages():
    with pytest.raises(ValueError, match="upsample_residual_std is a positive number for the SR stages"):
        dataclasses.replace(toy.toy_adapter(stage="stunet"), upsample_residual_std=0.1)


def test_upsample_residual_loss_weight_makes_the_loss_that_of_the_models_own_output():
    """EDM's weighting: for any raw output, weighted v-loss of the adapter's prediction = mean squared error of the
    raw output against the raw output that would predict x0 exactly (NumPy, from EDM's c_skip, c_out in its own
    variables); an ordinary adapter's weight is 1."""
    std = 0.1
    rng = np.random.default_rng(8)
    low_res = rng.uniform(-1, 1, (3, 4, 4, 3)).astype(np.float32)
    x0 = rng.uniform(-1, 1, (3, 8, 8, 3)).astype(np.float32)
    eps = rng.normal(size=x0.shape).astype(np.float32)
    raw = rng.normal(size=x0.shape).astype(np.float32)
    logsnr = np.array([-5.0, 0.0, 4.0], np.float32)

    class Fixed(flax.linen.Module):
        @flax.linen.compact
        def __call__(self, x, *args, **kwargs):
            return jnp.asarray(raw)

    adapter = dataclasses.replace(toy.toy_adapter(stage="sr"), module=Fixed(), upsample_residual_std=std)
    alpha = np.sqrt(1 / (1 + np.exp(-logsnr))).reshape(3, 1, 1, 1)
    sigma = np.sqrt(1 / (1 + np.exp(logsnr))).reshape(3, 1, 1, 1)
    z = alpha * x0 + sigma * eps
    text = jnp.zeros((3, toy.TEXT_LENGTH, 16)), jnp.ones((3, toy.TEXT_LENGTH), bool)
    prediction = adapter.apply({}, jnp.asarray(z), jnp.asarray(logsnr), adapter_lib.ModelInputs(
        x0=jnp.asarray(x0), low_res=jnp.asarray(low_res)), *text, noise_aug_logsnr=jnp.zeros(3), train=False)
    v_loss = np.mean((np.asarray(prediction) - (alpha * eps - sigma * x0)) ** 2, axis=(1, 2, 3))
    weighted = v_loss * np.asarray(adapter.loss_weight(jnp.asarray(logsnr)))

    upsample = np.asarray(jax.image.resize(low_res, (3, 8, 8, 3), "bilinear"))
    noise = sigma / alpha  # EDM's sigma of x = z_residual / alpha
    c_skip, c_out = std**2 / (noise**2 + std**2), noise * std / np.sqrt(noise**2 + std**2)
    exact_raw = -((x0 - upsample) - c_skip * (z - alpha * upsample) / alpha) / c_out
    np.testing.assert_allclose(weighted, np.mean((raw - exact_raw) ** 2, axis=(1, 2, 3)), rtol=2e-3)
    np.testing.assert_array_equal(toy.toy_adapter(stage="sr").loss_weight(jnp.asarray(logsnr)), np.ones(3))
