"""Tiny real models (U-Net + random tiny T5) saved as training checkpoints, condition files, and the gin
configuration and command line that samples them; shared by tests/sample and tests/export (conftest.py)."""

import dataclasses
import json
import os

import av
import gin
import jax
import numpy as np
import optax
import pytest
import tensorflow as tf

from lumiere_jax.data import masks
from lumiere_jax.data import synthetic_render
from lumiere_jax.data import video_io
from lumiere_jax.models import config as model_config
from lumiere_jax.stages import checkpoint_layout
from lumiere_jax.stages import factory as stages
from lumiere_jax.train import checkpoints as checkpoints_lib
from lumiere_jax.train import state as state_lib

NUM_FRAMES, SIZE, SSR_SIZE = 4, 16, 32


def explicit(cls, **values):
    """`cls(...)` with every field given, so gin bindings left by a parsed config cannot change it."""
    return cls(**{**{field.name: field.default for field in dataclasses.fields(cls)}, **values})


def base_config(in_channels: int = 7) -> model_config.UNetConfig:
    return explicit(
        model_config.UNetConfig, image_size=SIZE, in_channels=in_channels, base_channels=16,
        channel_multipliers=(1, 2), num_res_blocks=1, attention_levels=(), cross_attention_levels=(1,), num_heads=2,
        norm_groups=4, embed_dim=32, text_embed_dim=32, text_length=8,
        temporal=explicit(model_config.TemporalConfig, num_frames=NUM_FRAMES, attention_blocks=1, attention_heads=2))


def ssr_config() -> model_config.UNetConfig:
    return explicit(
        model_config.UNetConfig, image_size=SSR_SIZE, base_channels=8, channel_multipliers=(1, 2), num_res_blocks=1,
        attention_levels=(), cross_attention_levels=(1,), num_heads=2, norm_groups=4, embed_dim=32, text_embed_dim=32,
        text_length=8, low_res_channels=3, low_res_size=SIZE,
        temporal=explicit(model_config.TemporalConfig, num_frames=2, resampling=False, attention_blocks=1,
                          attention_heads=2))


def make_adapter(stage: str, config: model_config.UNetConfig):
    return stages.unet_adapter(stage=stage, model_config=config, text_encoder_preset="tiny", text_length=8)


def random_params(adapter, seed: int, scale: float = 0.2):
    """Random parameters with the model's tree (NumPy normal * scale / sqrt(fan-in)): no init compile."""
    abstract = jax.eval_shape(lambda rng: __import__("flax").linen.unbox(adapter.init(rng)), jax.random.key(0))
    rng = np.random.default_rng(seed)

    def draw(leaf):
        fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
        return (rng.standard_normal(leaf.shape) * scale / np.sqrt(fan_in)).astype(np.float32)

    return jax.tree.map(draw, abstract)


def write_training_checkpoint(model_dir: str, adapter, params, ema_params, step: int = 7) -> None:
    """A training checkpoint as train/loop.py writes it (all parameters trainable, EMA distinct)."""
    state = state_lib.create_train_state(params, {}, optax.sgd(0.1), use_ema=True).replace(ema_params=ema_params)
    checkpointer = checkpoints_lib.Checkpointer(model_dir, checkpoints_lib.CheckpointConfig(async_save=False),
                                                adapter.name, checkpoint_layout.model_signature(params))
    checkpointer.save(step, state, {"index": 0}, params_finite=True)
    checkpointer.close()


def one_level_config(in_channels: int = 7) -> model_config.UNetConfig:
    """A one-level STUNet (no resampling; temporal attention at its only, coarsest, level): cheap to train."""
    return explicit(
        model_config.UNetConfig, image_size=SIZE, in_channels=in_channels, base_channels=16, channel_multipliers=(1,),
        num_res_blocks=1, attention_levels=(), cross_attention_levels=(), num_heads=2, norm_groups=4, embed_dim=32,
        text_embed_dim=32, text_length=8,
        temporal=explicit(model_config.TemporalConfig, num_frames=NUM_FRAMES, attention_blocks=1, attention_heads=2))


def synthetic_pool(seed: int, count: int, rates: masks.MaskRates | None = None):
    """Clips `[N, T, H, W, 3]` in [-1, 1], captions, and training masks drawn with `rates` (default: the three
    conditional kinds, boxes of 0.3 to 0.6 of the frame)."""
    rng = np.random.default_rng(seed)
    scenes = [synthetic_render.sample_scene(rng, NUM_FRAMES, SIZE, SIZE) for _ in range(count)]
    videos = np.stack([synthetic_render.render(scene, SIZE, SIZE) for scene in scenes]).astype(np.float32) / 127.5 - 1
    rates = rates or masks.MaskRates(unconditional=0.0, min_box_fraction=0.3, max_box_fraction=0.6)
    condition_masks = np.stack([masks.sample_condition_mask(tf.constant([seed, index]), NUM_FRAMES, SIZE, SIZE,
                                                            rates)[0].numpy() for index in range(count)])
    return videos, [synthetic_render.caption(scene) for scene in scenes], condition_masks


def write_png(path: str, image: np.ndarray) -> None:
    """uint8 [H, W, 3] -> lossless png (PyAV)."""
    with av.open(path, mode="w", format="image2") as container:
        stream = container.add_stream("png")
        stream.width, stream.height = image.shape[1], image.shape[0]
        stream.pix_fmt = "rgb24"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())




def unet_bindings(scope: str, config: model_config.UNetConfig) -> list[str]:
    """gin lines that make `{scope}/unet_adapter()` (scope "" for unscoped) build exactly `config`."""
    prefix = f"{scope}/" if scope else ""
    lines = [f"{prefix}unet_adapter.model_config = @{prefix}UNetConfig()"]
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name == "temporal":
            lines.append(f"{prefix}UNetConfig.temporal = @{prefix}TemporalConfig()")
            lines += [f"{prefix}TemporalConfig.{inner.name} = {getattr(value, inner.name)!r}"
                      for inner in dataclasses.fields(value)]
        else:
            lines.append(f"{prefix}UNetConfig.{field.name} = {value!r}")
    return lines


def write_gin(path: str, extra: tuple[str, ...] = ()) -> str:
    """A sampling config for the tiny base (conditional) + SSR models: the shipped files plus model bindings."""
    lines = ["include 'sample/ssr.gin'", "include 'sample/cpu_tiny.gin'", "BASE_STAGE = 'conditional'",
             "TEXT_LENGTH = 8", "SamplingConfig.num_steps = 2", "SamplingConfig.ssr_num_steps = 2",
             "OutputConfig.save_arrays = True", *unet_bindings("base", base_config()),
             *unet_bindings("ssr", ssr_config()), *extra]
    with open(path, "w") as file:
        file.write("\n".join(lines) + "\n")
    return path


def sample_argv(gin_file: str, prompts: str, output_dir: str, models: dict, *flags: str) -> list[str]:
    return [f"--gin_file={gin_file}", f"--gin.PROMPTS={prompts}", f"--gin.OUTPUT_DIR={output_dir}",
            f"--gin.BASE_CHECKPOINT={models['base_dir']}", f"--gin.SSR_CHECKPOINT={models['ssr_dir']}", *flags]


def write_rows(path: str, rows: list[dict]) -> str:
    with open(path, "w") as file:
        file.write("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


@pytest.fixture(autouse=True)
def clean_gin():
    """Command-line runs parse gin globally; leave no bindings behind for later tests."""
    yield
    gin.clear_config()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """{"base": adapter, "ssr": adapter, "base_dir": run dir, "ssr_dir": run dir, "base_ema": params}."""
    root = tmp_path_factory.mktemp("models")
    base, ssr = make_adapter("conditional", base_config()), make_adapter("ssr", ssr_config())
    base_params, base_ema = random_params(base, 0), random_params(base, 1)
    ssr_params = random_params(ssr, 2)
    write_training_checkpoint(os.fspath(root / "base"), base, base_params, base_ema)
    write_training_checkpoint(os.fspath(root / "ssr"), ssr, ssr_params, ssr_params)
    return {"base": base, "ssr": ssr, "base_dir": os.fspath(root / "base"), "ssr_dir": os.fspath(root / "ssr"),
            "base_params": base_params, "base_ema": base_ema}


@pytest.fixture(scope="session")
def condition_files(tmp_path_factory):
    """A 24x20 png image, a 4-frame mp4 of that size, and a region png (white box)."""
    root = tmp_path_factory.mktemp("conditions")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    region = np.zeros((20, 24, 3), np.uint8)
    region[4:12, 6:18] = 255
    write_png(os.fspath(root / "image.png"), image)
    write_png(os.fspath(root / "region.png"), region)
    video = np.stack([np.roll(image, shift, axis=1) for shift in range(NUM_FRAMES)])
    video_io.write_mp4(os.fspath(root / "video.mp4"), video, 8)
    video_io.write_mp4(os.fspath(root / "long.mp4"), np.concatenate([video, video]), 8)
    return {"image": os.fspath(root / "image.png"), "region": os.fspath(root / "region.png"),
            "video": os.fspath(root / "video.mp4"), "long_video": os.fspath(root / "long.mp4"),
            "image_array": image, "region_array": region[..., :1] // 255}
