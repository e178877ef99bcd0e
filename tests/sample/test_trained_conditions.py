"""Mask semantics through the model path (no known-content replacement): a tiny <J, C, M> model trained
briefly with the trainer's step on synthetic clips and the training masks (data/masks.py) must keep the given
image in image-to-video, the input outside the hole in inpainting, and a static scene outside the animated
region of a cinemagraph, when sampled with the conditions the sampler builds from files (sample/job.py)."""

import dataclasses
import os

import jax
import numpy as np
import pytest

from lumiere_jax.data import video_io
from lumiere_jax.data import vocab
from lumiere_jax.sample import applications
from lumiere_jax.sample import base as base_stage
from lumiere_jax.sample import conditions
from lumiere_jax.sample import job
from lumiere_jax.sample import rows as rows_lib
from lumiere_jax.stages import text as text_lib
from lumiere_jax.stages.diffusion_config import DiffusionConfig
from lumiere_jax.train import optimizer as optimizer_lib
from lumiere_jax.train import state as state_lib
from lumiere_jax.train import step as step_lib
from tiny_setup import (NUM_FRAMES, SIZE, make_adapter, one_level_config, random_params, synthetic_pool,
                        write_png)

TRAIN_STEPS, BATCH, POOL = 300, 8, 256
BOX = (0.25, 0.25, 0.75, 0.75)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Trains the tiny conditional model (x0 prediction, all parameters) with `train.step.train_step`."""
    adapter = dataclasses.replace(make_adapter("conditional", one_level_config()), parameterization="x0")
    videos, captions, condition_masks = synthetic_pool(0, POOL)
    tokens, text_mask = vocab.tokenize(captions, vocab.get_vocabulary(), adapter.text_length)
    text_params = jax.jit(adapter.text_encoder.init)(text_lib.training_text_encoder_rng(0))
    optimizer = optimizer_lib.OptimizerConfig(learning_rate=1e-2, warmup_steps=10, decay="constant", ema_decay=0.0)
    learning_rate = optimizer_lib.learning_rate_schedule(optimizer, TRAIN_STEPS)
    tx = optimizer_lib.make_optimizer(optimizer, learning_rate)
    state = state_lib.create_train_state(random_params(adapter, 3, scale=0.5), {}, tx, use_ema=False)
    train_step = jax.jit(step_lib.bind_train_step(adapter, DiffusionConfig(), tx, learning_rate, 0.0))
    order = np.random.default_rng(1)
    for _ in range(TRAIN_STEPS):
        index = order.choice(POOL, BATCH, replace=False)
        batch = {"video": videos[index], "condition": videos[index], "condition_mask": condition_masks[index],
                 "text_tokens": tokens[index], "text_mask": text_mask[index]}
        state, metrics = train_step(state, batch, text_params, jax.random.key(2))
    assert np.isfinite(float(metrics["loss"]))
    return adapter, state.params, text_params, tmp_path_factory.mktemp("trained")


def test_conditions_are_kept_by_the_trained_model(trained):
    adapter, params, text_params, root = trained
    videos, captions, _ = synthetic_pool(1, 2)
    image = ((videos[0, 0] + 1) * 127.5).round().astype(np.uint8)
    other_image = ((videos[1, 0] + 1) * 127.5).round().astype(np.uint8)
    write_png(os.fspath(root / "image.png"), image)
    video_io.write_mp4(os.fspath(root / "video.mp4"), ((videos[0] + 1) * 127.5).round().astype(np.uint8), 8)
    rows = [rows_lib.Row(index=0, prompt=captions[0], id="t2v"),
            rows_lib.Row(index=1, prompt=captions[0], id="i2v", mode="i2v", image=os.fspath(root / "image.png")),
            rows_lib.Row(index=2, prompt=captions[0], id="inpaint", mode="inpaint",
                         video=os.fspath(root / "video.mp4"), box=BOX),
            rows_lib.Row(index=3, prompt=captions[0], id="cinemagraph", mode="cinemagraph",
                         image=os.fspath(root / "image.png"), box=BOX)]
    config = applications.SamplingConfig(num_steps=8, guidance_weight=1.0, threshold_percentile=None)
    host = [job.row_inputs(row, adapter, config, job_seed=0) for row in rows]
    batch = {name: np.stack([arrays[name] for arrays in host]) for name in host[0]}
    batch["tokens"], batch["text_mask"] = vocab.tokenize([row.prompt for row in rows], vocab.get_vocabulary(),
                                                         adapter.text_length)
    generate = jax.jit(lambda p, t, b: base_stage.generate_base(
        applications.Stage(adapter, p, t), b, DiffusionConfig().schedule_fn, config, config.num_steps))
    t2v, i2v, inpaint, cinemagraph = np.asarray(generate(params, text_params, batch))

    def error(a, b):
        return float(np.mean(np.abs(a - b)))

    given = conditions.fit_image(image, SIZE, SIZE)
    assert error(i2v[0], given) < 0.15
    assert error(i2v[0], given) < 0.3 * error(i2v[0], conditions.fit_image(other_image, SIZE, SIZE))

    outside = conditions.box_region(BOX, NUM_FRAMES, SIZE, SIZE)[..., 0] == 0
    source = batch["condition"][2]  # the decoded, fitted input video
    assert error(inpaint[outside], source[outside]) < 0.15
    assert error(inpaint[outside], source[outside]) < 0.5 * error(t2v[outside], source[outside])

    still = outside[1:]
    motion_outside = error(cinemagraph[1:][still], np.broadcast_to(cinemagraph[:1], cinemagraph[1:].shape)[still])
    assert motion_outside < 0.1
    assert error(cinemagraph[1:][still], np.broadcast_to(given, cinemagraph[1:].shape)[still]) < 0.15
