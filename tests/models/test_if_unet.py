"""IF U-Nets: parity with diffusers' UNet2DConditionModel (tiny random stage-I-like and stage-II-like models with
IF's block types), the strict safetensors converter, and the published presets."""

import dataclasses
import json
import math

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from flax import traverse_util

from lumiere_jax.diffusion import discrete, schedules
from lumiere_jax.models import if_config, if_weights, inflate, param_counts
from lumiere_jax.models.config import TemporalConfig
from lumiere_jax.models.if_unet import IFUNet, example_inputs, init_variables, upsample_aligned_corners
from lumiere_jax.models.param_paths import is_temporal

IF_FIELDS = dict(act_fn="gelu", addition_embed_type="text", resnet_time_scale_shift="scale_shift",
                 mid_block_type="UNetMidBlock2DSimpleCrossAttn", cross_attention_norm="group_norm", norm_eps=1e-5)
# Stage I: IF-I's block layout (plain level first, attention below), 4-channel heads, text width 24 -> 32.
STAGE_ONE = dict(
    sample_size=16, in_channels=3, out_channels=6, block_out_channels=(16, 32), layers_per_block=1,
    down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
    up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"), attention_head_dim=8,
    encoder_hid_dim=24, cross_attention_dim=32, addition_embed_type_num_heads=4, norm_num_groups=4, **IF_FIELDS)
# Stage II: 6 input channels (x and the upsampled low-res image), noise level as a timestep class embedding,
# per-level block counts as IF-II.
STAGE_TWO = dict(
    sample_size=16, in_channels=6, out_channels=6, block_out_channels=(8, 16, 32), layers_per_block=(1, 1, 2),
    down_block_types=("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
    up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
    attention_head_dim=8, encoder_hid_dim=24, cross_attention_dim=32, addition_embed_type_num_heads=4,
    norm_num_groups=4, class_embed_type="timestep", **IF_FIELDS)
TIMESTEPS = np.array([0, 421, 999], np.int64)
TEXT_LENGTH = 5


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random values everywhere: weights ~ N(0, 1/fan_in), biases ~ N(0, 0.1^2), norm scales ~ 1 + N(0, 0.1^2)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if parameter.ndim >= 2:
                parameter.copy_(noise / math.sqrt(math.prod(parameter.shape[1:])))
            elif "norm" in name and name.endswith("weight"):
                parameter.copy_(1 + 0.1 * noise)
            else:
                parameter.copy_(0.1 * noise)
    return model.eval()


def inputs(config: dict, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    batch, size = len(TIMESTEPS), config["sample_size"]
    lengths = np.array([TEXT_LENGTH, 2, 0])  # the last row is null text: every text key masked
    result = dict(
        x=rng.standard_normal((batch, size, size, 3)).astype(np.float32),
        timesteps=TIMESTEPS.astype(np.float32),
        text_embeddings=rng.standard_normal((batch, TEXT_LENGTH, config["encoder_hid_dim"])).astype(np.float32),
        text_mask=np.arange(TEXT_LENGTH)[None, :] < lengths[:, None],
    )
    if config.get("class_embed_type"):
        result["low_res"] = rng.uniform(-1, 1, (batch, size // 4, size // 4, 3)).astype(np.float32)
        result["noise_level"] = np.array([250, 0, 100], np.float32)
    return result


def torch_output(model: UNet2DConditionModel, batch: dict[str, np.ndarray]) -> np.ndarray:
    """diffusers' forward as IF's pipelines call it: the SR stage gets x concatenated with the low-res image
    upsampled by torch (bilinear, aligned corners) and the noise level as class label."""
    sample = torch.from_numpy(batch["x"]).permute(0, 3, 1, 2)
    kwargs = {}
    if "low_res" in batch:
        low_res = torch.from_numpy(batch["low_res"]).permute(0, 3, 1, 2)
        upscaled = torch.nn.functional.interpolate(low_res, sample.shape[-2:], mode="bilinear", align_corners=True)
        sample = torch.cat([sample, upscaled], dim=1)
        kwargs["class_labels"] = torch.from_numpy(batch["noise_level"]).long()
    with torch.no_grad():
        out = model(sample, torch.from_numpy(batch["timesteps"]).long(), torch.from_numpy(batch["text_embeddings"]),
                    encoder_attention_mask=torch.from_numpy(batch["text_mask"]), **kwargs).sample
    return out.permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module", params=["stage_one", "stage_two"])
def saved_model(request, tmp_path_factory):
    fields = {"stage_one": STAGE_ONE, "stage_two": STAGE_TWO}[request.param]
    model = randomize(UNet2DConditionModel(**fields), seed=len(request.param))
    directory = tmp_path_factory.mktemp(request.param) / "unet"
    model.save_pretrained(directory)
    return fields, model, directory


_forward = jax.jit(lambda config, params, batch: IFUNet(config).apply({"params": params}, **batch), static_argnums=0)


def test_converted_model_matches_diffusers(saved_model):
    fields, model, directory = saved_model
    config, params = if_weights.load_if_unet(str(directory.parent))  # the model directory: its unet/ is found
    batch = inputs(fields)
    ours = np.asarray(_forward(config, params, {k: jax.numpy.asarray(v) for k, v in batch.items()}))
    np.testing.assert_allclose(ours, torch_output(model, batch), atol=1e-4, rtol=1e-4)


def test_sharded_checkpoint_loads_the_same(saved_model, tmp_path):
    fields, model, directory = saved_model
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / if_weights.WEIGHTS_INDEX).is_file() and not (tmp_path / if_weights.WEIGHTS_FILE).exists()
    _, single = if_weights.load_if_unet(str(directory))
    _, sharded = if_weights.load_if_unet(str(tmp_path))
    jax.tree.map(np.testing.assert_array_equal, single, sharded)


def test_converter_names_missing_and_unused_tensors(saved_model):
    fields, _, directory = saved_model
    config = if_weights.read_config(str(directory))
    state = if_weights.read_state_dict(str(directory))
    del state["down_blocks.0.resnets.0.conv1.weight"]
    state["mid_block.attentions.0.extra.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError) as error:
        if_weights.convert_state_dict(state, config)
    message = str(error.value)
    assert "down_0_res_0/conv_0/kernel <- down_blocks.0.resnets.0.conv1.weight" in message
    assert "unused tensors (1): ['mid_block.attentions.0.extra.weight']" in message


def test_converter_names_shape_mismatches(saved_model):
    fields, _, directory = saved_model
    config = if_weights.read_config(str(directory))
    wider = if_config.IFUNetConfig(**{**config.__dict__, "cross_attention_dim": 64})
    with pytest.raises(ValueError, match=r"shape mismatches .*encoder_hid_proj.weight"):
        if_weights.convert_state_dict(if_weights.read_state_dict(str(directory)), wider)


def test_config_json_outside_if_is_rejected(tmp_path):
    unet = tmp_path / "unet"
    unet.mkdir()
    (unet / "config.json").write_text(json.dumps({**STAGE_ONE, "act_fn": "silu"}))
    with pytest.raises(ValueError, match="act_fn"):
        if_weights.read_config(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors"):
        if_weights.read_state_dict(str(tmp_path))


def test_aligned_corner_upsampling_matches_torch():
    low = np.random.default_rng(1).standard_normal((2, 5, 5, 3)).astype(np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(low).permute(0, 3, 1, 2), (16, 16), mode="bilinear",
                                               align_corners=True).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(upsample_aligned_corners(jax.numpy.asarray(low), 16), expected, atol=1e-6)


def _flax_shape(torch_shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    if name.endswith("positional_embedding"):
        return (math.prod(torch_shape),)
    if len(torch_shape) == 4:
        return (torch_shape[2], torch_shape[3], torch_shape[1], torch_shape[0])
    return tuple(reversed(torch_shape))


def test_every_tensor_of_a_published_size_maps_to_a_parameter_of_its_shape():
    """A 400M-class stage I layout at full size (T5-XXL text, 64-channel heads, 3 blocks per level; diffusers' model
    on the meta device, ours from eval_shape: nothing allocated)."""
    fields = dict(IF_FIELDS, sample_size=64, in_channels=3, out_channels=6, block_out_channels=(256, 512, 768, 1024),
                  layers_per_block=3, attention_head_dim=64, encoder_hid_dim=4096, cross_attention_dim=1024,
                  down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * 3,
                  up_block_types=("SimpleCrossAttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",))
    with torch.device("meta"):
        model = UNet2DConditionModel(**fields)
    config = if_config.config_from_diffusers(dict(model.config))
    assert (config.attention_levels, config.layers_per_block, config.text_embed_dim) == ((1, 2, 3), (3,) * 4, 4096)
    theirs = {name: _flax_shape(tuple(tensor.shape), name) for name, tensor in model.state_dict().items()}
    abstract = jax.eval_shape(lambda rng: init_variables(config, rng), jax.random.key(0))
    boxed = traverse_util.flatten_dict(abstract["params"])
    unnamed = [path for path, leaf in boxed.items()
               if not isinstance(leaf, nn.Partitioned) or len(leaf.names) != leaf.value.ndim]
    assert not unnamed, f"parameters without logical axis names: {unnamed[:5]}"
    ours = {if_weights.diffusers_name(path, 4): leaf.shape
            for path, leaf in traverse_util.flatten_dict(nn.unbox(abstract)["params"]).items()}
    assert ours == theirs


def test_inflated_model_on_a_static_clip_equals_the_image_model_per_frame(saved_model, unet_helpers):
    """Stage I -> STUNet (temporal resampling, (2+1)D convs, temporal attention); stage II -> SSR (fixed frames):
    at the inflation init a clip of one repeated frame gives the image model's output on every frame."""
    fields, _, directory = saved_model
    image_config, image_params = if_weights.load_if_unet(str(directory))
    stage_two = image_config.noise_level_conditioning
    temporal = TemporalConfig(num_frames=4, resampling=not stage_two, attention_blocks=1, attention_heads=2)
    video_config = dataclasses.replace(image_config, temporal=temporal)
    video_init = jax.jit(lambda key: IFUNet(video_config).init(key, **example_inputs(video_config)))(
        unet_helpers.cheap_key(0))
    params = inflate.inflate_t2i_params(image_params, nn.unbox(video_init)["params"])
    flat_mask = traverse_util.flatten_dict(inflate.trainable_mask(params))
    assert any(flat_mask.values()) and all(is_temporal(path) == trainable for path, trainable in flat_mask.items())
    batch = {name: jax.numpy.asarray(value) for name, value in inputs(fields).items()}
    image_out = _forward(image_config, image_params, batch)
    clip = dict(batch, x=jax.numpy.repeat(batch["x"][:, None], 4, axis=1))
    if stage_two:
        clip["low_res"] = jax.numpy.repeat(batch["low_res"][:, None], 4, axis=1)
    video_out = _forward(video_config, params, clip)
    assert video_out.shape == (3, 4, 16, 16, 6)
    np.testing.assert_allclose(video_out, jax.numpy.repeat(image_out[:, None], 4, axis=1), atol=1e-5, rtol=1e-5)


def test_sampler_steps_with_the_model_match_diffusers_scheduler(tmp_path):
    """Three IF sampler steps (stage I): diffusers' torch model + DDPMScheduler (IF's config) against our converted
    model driven in log-SNR (timestep_from_logsnr) + discrete.learned_range_step, with the same step noise."""
    fields = STAGE_ONE
    model = randomize(UNet2DConditionModel(**fields), seed=5)
    model.save_pretrained(tmp_path)
    config, params = if_weights.load_if_unet(str(tmp_path))
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                              variance_type="learned_range", prediction_type="epsilon", thresholding=True,
                              dynamic_thresholding_ratio=0.95, sample_max_value=1.5)
    scheduler.set_timesteps(3)
    alphas_cumprod = schedules.squared_cosine_alphas_cumprod()
    batch = inputs(fields)
    theirs = torch.from_numpy(batch["x"]).permute(0, 3, 1, 2)
    ours = jax.numpy.asarray(batch["x"])
    generator, noise_generator = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    timesteps = [int(t) for t in scheduler.timesteps] + [-1]
    for t, s in zip(timesteps[:-1], timesteps[1:]):
        noise = torch.randn(theirs.shape, generator=noise_generator) if t > 0 else torch.zeros(theirs.shape)
        with torch.no_grad():
            output = model(theirs, t, torch.from_numpy(batch["text_embeddings"]),
                           encoder_attention_mask=torch.from_numpy(batch["text_mask"])).sample
        theirs = scheduler.step(output, t, theirs, generator=generator).prev_sample
        logsnr_t, logsnr_s = (schedules.timestep_logsnr(jax.numpy.full((3,), step), alphas_cumprod) for step in (t, s))
        model_batch = dict(batch, x=ours, timesteps=discrete.timestep_from_logsnr(logsnr_t, alphas_cumprod))
        our_output = _forward(config, params, {k: jax.numpy.asarray(v) for k, v in model_batch.items()})
        ours = discrete.learned_range_step(ours, our_output, logsnr_t, logsnr_s,
                                           jax.numpy.asarray(noise.numpy().transpose(0, 2, 3, 1)))
        np.testing.assert_allclose(ours, theirs.numpy().transpose(0, 2, 3, 1), atol=1e-4, rtol=1e-4)


def test_parameter_counts_from_a_config_json(tmp_path, capsys):
    """`param_counts` on an IF config.json: the IF total, and the inflated STUNet adding only temporal parameters."""
    config_json = tmp_path / "config.json"
    config_json.write_text(json.dumps(STAGE_ONE))
    param_counts.main([str(config_json)])
    lines = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    (image_total, image_temporal, _), (total, temporal, spatial) = (
        [int(value.replace(",", "")) for value in line[1:]] for line in lines)
    model = UNet2DConditionModel(**STAGE_ONE)
    assert image_total == sum(p.numel() for p in model.parameters()) and image_temporal == 0
    assert spatial == image_total and temporal > 0 and total == spatial + temporal
