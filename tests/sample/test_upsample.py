"""`python -m lumiere_jax.sample.upsample`: the SSR alone on given low-resolution clips, with the sampling job's gin
files; every row's output depends only on its own clip, prompt and key."""

import os

import numpy as np
import pytest

from lumiere_jax.sample import upsample
from tiny_setup import NUM_FRAMES, SIZE, SSR_SIZE, write_gin


def run_upsample(tmp_path, tiny_models, low_res, prompts, name, *gin_lines):
    inputs, output = os.fspath(tmp_path / f"{name}_in.npz"), os.fspath(tmp_path / f"{name}_out.npz")
    np.savez(inputs, low_res=low_res, prompts=np.array(prompts))
    gin_file = write_gin(os.fspath(tmp_path / "sample.gin"), ("include 'sample/upsample.gin'", *gin_lines))
    argv = [f"--gin_file={gin_file}", f"--gin.SSR_CHECKPOINT={tiny_models['ssr_dir']}", "--gin.PROMPTS=unused",
            "--gin.OUTPUT_DIR=unused", f"--gin.BASE_CHECKPOINT={tiny_models['base_dir']}",
            f"--gin.upsample_clips.inputs={inputs}", f"--gin.upsample_clips.output={output}"]
    assert upsample.main(argv) == 0
    with np.load(output) as arrays:
        return arrays["video"]


def test_upsamples_each_clip_on_its_own(tmp_path, tiny_models):
    """Odd batch sizes too: 1 and 3 crashed XLA's CPU compiler on the branch that added this job (8606615,
    jaxlib 0.10.2, a segmentation fault); they compile since its merge (4b95481)."""
    low_res = np.random.default_rng(0).uniform(-1, 1, (3, NUM_FRAMES, SIZE, SIZE, 3)).astype(np.float32)
    prompts = ["a red circle moving quickly up on a blue background", "a green square on a white background",
               "a black diamond standing still on a cyan background"]
    video = run_upsample(tmp_path, tiny_models, low_res, prompts, "three")
    assert video.shape == (3, NUM_FRAMES, SSR_SIZE, SSR_SIZE, 3) and video.dtype == np.float32
    assert np.all(np.abs(video) <= 1.0) and not np.allclose(video[0], video[1])
    one = run_upsample(tmp_path, tiny_models, low_res[:1], prompts[:1], "one")
    np.testing.assert_allclose(one, video[:1], atol=1e-5)


def test_weights_trained_as_another_prediction_target_are_refused(tmp_path, tiny_models):
    """The tiny SSR diffuses x0; sampling it as an upsample-residual model would fit its parameters but not its
    predictions: refused before anything runs, naming the binding that fixes it."""
    low_res = np.zeros((2, NUM_FRAMES, SIZE, SIZE, 3), np.float32)
    with pytest.raises(ValueError, match=r"trained as 'unet_ssr'.*upsample_residual_std = None"):
        run_upsample(tmp_path, tiny_models, low_res, ["a", "b"], "residual",
                     "ssr/unet_adapter.upsample_residual_std = 0.1")
