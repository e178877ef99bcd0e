"""Sampling, export and the text cache rebuild a random text encoder (stages/text.py) from the key the trainer
really uses: observed by running the trainer, not by re-deriving the key."""

import jax
import numpy as np

import toy
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.stages import text as text_lib
from lumiere_jax.train import checkpoints as checkpoints_lib
from lumiere_jax.train import loop
from lumiere_jax.train import optimizer as optimizer_lib


def test_random_init_key_is_the_trainers(tmp_path):
    seen = []

    def recording_init(rng):
        seen.append(np.asarray(jax.random.key_data(rng)))
        return toy.ToyTextEncoder().init(rng)

    seed = 5
    loop.train(model_dir=str(tmp_path), adapter=toy.toy_adapter(), dataset_fn=toy.toy_dataset, num_train_steps=1,
               global_batch_size=2, optimizer=optimizer_lib.OptimizerConfig(warmup_steps=0, ema_decay=0.0),
               checkpoint=checkpoints_lib.CheckpointConfig(save_every_steps=1, async_save=False),
               mesh=mesh_lib.MeshConfig((1, 1, 1), num_devices=1), text_encoder_params_fn=recording_init, seed=seed)
    text_lib.frozen_text_encoder_params(toy.ToyTextEncoder(), recording_init, seed)  # what inference loads
    trainer_key, rebuilt = seen
    np.testing.assert_array_equal(rebuilt, trainer_key)
    assert not np.array_equal(jax.random.key_data(text_lib.training_text_encoder_rng(seed + 1)), trainer_key)
