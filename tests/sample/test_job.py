"""The batch sampling job end to end from the command line on tiny real models (random weights):
every mode, decodable outputs, determinism across batches and shards, resumption, known-content replacement."""

import json
import os

import numpy as np
import pytest

from lumiere_jax.data import video_io
from lumiere_jax.models import param_paths
from lumiere_jax.sample import cli
from lumiere_jax.sample import conditions
from lumiere_jax.sample import outputs
from tiny_setup import NUM_FRAMES, SIZE, SSR_SIZE, sample_argv, write_gin, write_rows

FPS = 8


def all_rows(files):
    return [
        {"prompt": "a red circle moving right", "id": "t2v"},
        {"prompt": "a blue square", "mode": "i2v", "image": files["image"], "id": "i2v", "guidance_weight": 2.0},
        {"prompt": "fill the hole", "mode": "inpaint", "video": files["video"], "mask": files["region"],
         "id": "inpaint", "seed": 11},
        {"prompt": "water flowing", "mode": "cinemagraph", "image": files["image"], "box": "0.2,0.2,0.6,0.7",
         "id": "cinemagraph"},
        {"prompt": "make it snow", "mode": "sdedit", "video": files["video"], "strength": 0.5, "id": "sdedit"},
    ]


def run_cli(*argv):
    assert cli.main(list(argv)) == 0


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_models, condition_files):
    root = tmp_path_factory.mktemp("job")
    gin_file = write_gin(os.fspath(root / "tiny.gin"), ("OutputConfig.write_gif = True",))
    prompts = write_rows(os.fspath(root / "rows.jsonl"), all_rows(condition_files))
    return {"root": root, "gin": gin_file, "prompts": prompts, "models": tiny_models}


@pytest.fixture(scope="module")
def full_job(setup):
    output_dir = os.fspath(setup["root"] / "full")
    run_cli(*sample_argv(setup["gin"], setup["prompts"], output_dir, setup["models"]))
    return output_dir


def frames_of(output_dir, row_id):
    return np.load(os.path.join(output_dir, f"{row_id}.npy"))


def test_every_mode_writes_decodable_videos_and_sidecars(full_job):
    for row_id in ("t2v", "i2v", "inpaint", "cinemagraph", "sdedit"):
        frames, fps = video_io.read_video(os.path.join(full_job, f"{row_id}.mp4"))
        assert frames.shape == (NUM_FRAMES, SSR_SIZE, SSR_SIZE, 3) and fps == pytest.approx(FPS)
        gif_frames, _ = video_io.read_video(os.path.join(full_job, f"{row_id}.gif"))
        assert gif_frames.shape == (NUM_FRAMES, SSR_SIZE, SSR_SIZE, 3)
        # The mp4 is a lossy copy of this row's exact frames (random weights give noisy, hard-to-code frames).
        own_error = np.mean(np.abs(frames.astype(float) - frames_of(full_job, row_id)))
        other_error = np.mean(np.abs(frames.astype(float) - frames_of(full_job, "t2v" if row_id != "t2v" else "i2v")))
        assert own_error < 0.75 * other_error
        with open(os.path.join(full_job, f"{row_id}.json")) as file:
            sidecar = json.load(file)
        assert sidecar["id"] == row_id and sidecar["base_checkpoint"]["step"] == 7
        assert sidecar["base_checkpoint"]["weights"] == "ema" and sidecar["ssr"]
        assert sidecar["timings"]["batch_seconds"] > 0 and sidecar["sampling"]["num_steps"] == 2
    with open(os.path.join(full_job, "inpaint.json")) as file:
        assert json.load(file)["seed"] == 11
    with open(os.path.join(full_job, "sdedit.json")) as file:
        assert json.load(file)["t_start"] == 0.5
    with open(os.path.join(full_job, "summary-0-of-1.json")) as file:
        assert json.load(file)["generated"] == 5
    videos = [frames_of(full_job, row_id) for row_id in ("t2v", "i2v", "inpaint")]
    assert not np.array_equal(videos[0], videos[1]) and not np.array_equal(videos[1], videos[2])


def assert_same_videos(first_dir, second_dir, row_ids):
    for row_id in row_ids:
        first, second = frames_of(first_dir, row_id).astype(int), frames_of(second_dir, row_id).astype(int)
        assert np.max(np.abs(first - second)) <= 1, row_id  # float rounding may differ with batch composition


def test_same_row_same_video_across_shards_and_batch_sizes(setup, full_job, condition_files):
    sharded = os.fspath(setup["root"] / "sharded")
    for shard in range(2):
        run_cli(*sample_argv(setup["gin"], setup["prompts"], sharded, setup["models"], f"--shard_id={shard}",
                             "--num_shards=2"))
    assert_same_videos(full_job, sharded, ("t2v", "i2v", "inpaint", "cinemagraph", "sdedit"))
    # A bigger batch (16 rows over the 8 devices) holding the same rows (same indices, hence the same keys).
    bigger = os.fspath(setup["root"] / "bigger")
    prompts = write_rows(os.fspath(setup["root"] / "four.jsonl"), all_rows(condition_files)[:4])
    run_cli(*sample_argv(setup["gin"], prompts, bigger, setup["models"], "--gin.sample_videos.batch_size=16"))
    assert_same_videos(full_job, bigger, ("t2v", "i2v", "inpaint", "cinemagraph"))


def test_ddpm_same_row_same_video_at_any_shard_and_position(setup, condition_files):
    """Step noise per row (ddpm here; ddim with eta > 0 draws it the same way, tests/diffusion/test_samplers.py):
    a row's video depends on its own seed only, not on its batch-mates, shard count or position (batch sizes:
    tests/diffusion/test_samplers.py)."""
    ddpm = "--gin.SamplingConfig.sampler='ddpm'"
    rows = [{**row, "seed": 100 + index} for index, row in enumerate(all_rows(condition_files))]
    full = os.fspath(setup["root"] / "ddpm_full")
    run_cli(*sample_argv(setup["gin"], write_rows(full + ".jsonl", rows), full, setup["models"], ddpm))
    moved = os.fspath(setup["root"] / "ddpm_moved")  # reversed rows, shard 0 of 2: other batch-mates and positions
    run_cli(*sample_argv(setup["gin"], write_rows(moved + ".jsonl", rows[::-1]), moved, setup["models"], ddpm,
                         "--shard_id=0", "--num_shards=2"))
    moved_ids = [name[:-4] for name in os.listdir(moved) if name.endswith(".npy")]
    assert len(moved_ids) >= 2
    assert_same_videos(full, moved, moved_ids)


def test_killed_job_resumes_and_matches(setup, full_job, monkeypatch):
    output_dir = os.fspath(setup["root"] / "killed")
    write_row, written = outputs.write_row, []

    def dies_after_two_rows(*args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt("killed")
        written.append(args[1].id)
        return write_row(*args, **kwargs)

    monkeypatch.setattr(outputs, "write_row", dies_after_two_rows)
    with pytest.raises(KeyboardInterrupt):
        cli.main(sample_argv(setup["gin"], setup["prompts"], output_dir, setup["models"]))
    monkeypatch.setattr(outputs, "write_row", write_row)
    assert sorted(name for name in os.listdir(output_dir) if name.endswith(".json")) == sorted(
        f"{row_id}.json" for row_id in written)
    finished = {row_id: os.stat(os.path.join(output_dir, f"{row_id}.json")).st_mtime_ns for row_id in written}
    run_cli(*sample_argv(setup["gin"], setup["prompts"], output_dir, setup["models"]))
    with open(os.path.join(output_dir, "summary-0-of-1.json")) as file:
        summary = json.load(file)
    assert (summary["generated"], summary["skipped_finished"]) == (3, 2)
    for row_id, mtime in finished.items():  # finished rows were not written again
        assert os.stat(os.path.join(output_dir, f"{row_id}.json")).st_mtime_ns == mtime
    for row_id in ("t2v", "i2v", "inpaint", "cinemagraph", "sdedit"):
        np.testing.assert_array_equal(frames_of(output_dir, row_id), frames_of(full_job, row_id))
    assert not [name for name in os.listdir(output_dir) if name.startswith(".tmp_")]


def test_base_only_with_known_content_replacement(setup, condition_files):
    """`replace_known` pins every M = 1 pixel to C (a sampler-side guarantee, independent of the weights)."""
    output_dir = os.fspath(setup["root"] / "base_only")
    prompts = write_rows(os.fspath(setup["root"] / "conditioned.jsonl"), all_rows(condition_files)[1:4])
    run_cli(*sample_argv(setup["gin"], prompts, output_dir, setup["models"], "--gin.ModelsConfig.use_ssr=False",
                         "--gin.SamplingConfig.replace_known=True"))
    image = outputs.to_uint8(conditions.fit_image(condition_files["image_array"], SIZE, SIZE)).astype(int)
    video = conditions.fit_video(video_io.read_video(condition_files["video"])[0], SIZE, SIZE)
    i2v = frames_of(output_dir, "i2v").astype(int)
    assert i2v.shape == (NUM_FRAMES, SIZE, SIZE, 3)
    assert np.max(np.abs(i2v[0] - image)) <= 1
    fill = conditions.read_region(condition_files["region"], (20, 24), NUM_FRAMES, SIZE, SIZE)[..., 0] > 0
    inpainted = frames_of(output_dir, "inpaint").astype(int)
    assert np.max(np.abs(inpainted[~fill] - outputs.to_uint8(video).astype(int)[~fill])) <= 1
    assert np.mean(np.abs(inpainted[fill] - outputs.to_uint8(video).astype(int)[fill])) > 5
    animate = conditions.box_region((0.2, 0.2, 0.6, 0.7), NUM_FRAMES, SIZE, SIZE)[0, ..., 0] > 0
    cinemagraph = frames_of(output_dir, "cinemagraph").astype(int)
    for frame in cinemagraph:
        assert np.max(np.abs(frame[~animate] - image[~animate])) <= 1
    assert np.mean(np.abs(cinemagraph[1:][:, animate] - image[animate])) > 5


def test_ssr_keeps_upsampled_known_content(setup, condition_files):
    """With the SSR, `replace_known` pins the SSR's frames to C upsampled bilinearly where the nearest-upsampled M
    is 1: the i2v first frame and the cinemagraph's static part (NumPy bilinear reference, half-pixel centres)."""
    output_dir = os.fspath(setup["root"] / "ssr_known")
    rows = [row for row in all_rows(condition_files) if row["id"] in ("i2v", "cinemagraph")]
    prompts = write_rows(os.fspath(setup["root"] / "ssr_known.jsonl"), rows)
    run_cli(*sample_argv(setup["gin"], prompts, output_dir, setup["models"], "--gin.SamplingConfig.replace_known=True"))
    image = conditions.fit_image(condition_files["image_array"], SIZE, SIZE).astype(np.float64)
    # SSR_SIZE = 2 * SIZE: each output pixel mixes its own source pixel (3/4) and the neighbour (1/4) per axis,
    # edges clamped.
    assert SSR_SIZE == 2 * SIZE

    def upsample_axis(array, axis):
        padded = np.concatenate([np.take(array, [0], axis), array, np.take(array, [-1], axis)], axis)
        inner = np.take(padded, range(1, SIZE + 1), axis)
        before, after = np.take(padded, range(SIZE), axis), np.take(padded, range(2, SIZE + 2), axis)
        even, odd = 0.75 * inner + 0.25 * before, 0.75 * inner + 0.25 * after
        return np.stack([even, odd], axis + 1).reshape(array.shape[:axis] + (2 * SIZE,) + array.shape[axis + 1:])

    expected = outputs.to_uint8(upsample_axis(upsample_axis(image, 0), 1)).astype(int)
    i2v = frames_of(output_dir, "i2v").astype(int)
    assert i2v.shape == (NUM_FRAMES, SSR_SIZE, SSR_SIZE, 3)
    assert np.max(np.abs(i2v[0] - expected)) <= 1
    assert np.mean(np.abs(i2v[1:] - expected)) > 5  # the other frames are generated
    animate = conditions.box_region((0.2, 0.2, 0.6, 0.7), 1, SIZE, SIZE)[0, ..., 0] > 0
    animate = np.repeat(np.repeat(animate, 2, 0), 2, 1)  # nearest upsampling of the mask
    for frame in frames_of(output_dir, "cinemagraph").astype(int):
        assert np.max(np.abs(frame[~animate] - expected[~animate])) <= 1


def test_usage_errors_exit_with_status_2(setup, tiny_models, tmp_path, capsys):
    assert cli.main([f"--gin_file={setup['gin']}", f"--gin.OUTPUT_DIR={tmp_path}"]) == 2
    assert "PROMPTS" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--gin_file=x.gin", "--shard_id=2", "--num_shards=2"])


def test_style_job_blends_spatial_weights(setup, full_job, tiny_models, tmp_path):
    """alpha = 1 with a style T2I checkpoint samples exactly the model whose spatial weights are the style's and
    whose temporal weights are its own (checked against a checkpoint built that way)."""
    from tiny_setup import write_training_checkpoint  # noqa: PLC0415
    style_params = param_paths.flatten(tiny_models["base_params"])
    own = param_paths.flatten(tiny_models["base_ema"])
    spatial = {path: value for path, value in style_params.items() if "temporal" not in path}
    style_dir, blended_dir = os.fspath(tmp_path / "style"), os.fspath(tmp_path / "blended")
    write_training_checkpoint(style_dir, tiny_models["base"], param_paths.unflatten(spatial),
                              param_paths.unflatten(spatial))
    blended = param_paths.unflatten({**own, **spatial})
    write_training_checkpoint(blended_dir, tiny_models["base"], blended, blended)
    prompts = write_rows(os.fspath(tmp_path / "rows.jsonl"), [{"prompt": "a red circle moving right", "id": "t2v"}])
    styled, reference = os.fspath(tmp_path / "styled"), os.fspath(tmp_path / "reference")
    run_cli(*sample_argv(setup["gin"], prompts, styled, setup["models"],
                         f"--gin.ModelsConfig.style_checkpoint={style_dir}", "--gin.ModelsConfig.style_alpha=1.0"))
    run_cli(*sample_argv(setup["gin"], prompts, reference, setup["models"], f"--gin.BASE_CHECKPOINT={blended_dir}"))
    np.testing.assert_array_equal(frames_of(styled, "t2v"), frames_of(reference, "t2v"))
    assert not np.array_equal(frames_of(styled, "t2v"), frames_of(full_job, "t2v"))
    with open(os.path.join(styled, "t2v.json")) as file:
        assert json.load(file)["style"]["alpha"] == 1.0


def test_conditioned_modes_need_a_conditional_model(setup, condition_files, tmp_path):
    from lumiere_jax.sample import job  # noqa: PLC0415
    from tiny_setup import base_config, make_adapter  # noqa: PLC0415
    prompts = write_rows(os.fspath(tmp_path / "rows.jsonl"), all_rows(condition_files)[1:2])
    with pytest.raises(ValueError, match="needs a conditional base model"):
        job.sample_videos(output_dir=os.fspath(tmp_path / "out"), prompts=prompts,
                          models=job.ModelsConfig(base_adapter=make_adapter("stunet", base_config(in_channels=3))),
                          base_checkpoint=setup["models"]["base_dir"])
