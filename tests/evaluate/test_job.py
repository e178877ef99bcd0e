"""The evaluation job on real Orbax checkpoint folders with a stand-in generator: per-checkpoint JSON files,
TensorBoard scalars, resumption after a kill, in-progress saves skipped, and the command line with gin."""

import json
import os

import gin
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from lumiere_jax.data import synthetic_render
from lumiere_jax.evaluate import __main__ as evaluate_main
from lumiere_jax.evaluate import frechet
from lumiere_jax.evaluate import job
from lumiere_jax.evaluate import metrics

FRAMES, SIZE = 8, 32


def write_checkpoint(model_dir, step, quality):
    """A checkpoint in the trainer's layout (MODEL_DIR/checkpoints/<step>/{state, meta}) holding one scalar."""
    manager = ocp.CheckpointManager(os.path.join(model_dir, "checkpoints"), item_names=("state", "meta"),
                                    options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False))
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave({"quality": np.float32(quality)}),
                                               meta=ocp.args.JsonSave({"step": step})))
    manager.wait_until_finished()
    manager.close()


def scenes(count=6, seed=0):
    rng = np.random.default_rng(seed)
    return [synthetic_render.sample_scene(rng, FRAMES, SIZE, SIZE) for _ in range(count)]


class StandInGenerator:
    """Reads the checkpoint's `quality`: 1 renders each prompt's true scene, 0 returns noise. Counts calls."""

    def __init__(self, scene_list, fail_on_step=None):
        self.videos = {synthetic_render.caption(scene): synthetic_render.render(scene, SIZE, SIZE)
                       for scene in scene_list}
        self.fail_on_step = fail_on_step
        self.calls = []

    def __call__(self, step_dir, prompts, seeds, work_dir):
        step = int(os.path.basename(step_dir))
        self.calls.append(step)
        if step == self.fail_on_step:
            raise KeyboardInterrupt("simulated kill")
        quality = ocp.StandardCheckpointer().restore(os.path.join(step_dir, "state"))["quality"]
        rng = np.random.default_rng(list(seeds))
        return [self.videos[prompt] if quality > 0.5 else rng.integers(0, 256, (FRAMES, SIZE, SIZE, 3), np.uint8)
                for prompt in prompts]


def colour_features(videos):
    """A cheap stand-in for I3D: per-clip channel means and standard deviations."""
    clips = np.stack(videos).astype(np.float64)
    return np.concatenate([clips.mean(axis=(1, 2, 3)), clips.std(axis=(1, 2, 3))], axis=1)


@pytest.fixture
def run(tmp_path):
    model_dir = str(tmp_path / "run")
    write_checkpoint(model_dir, 10, quality=0.0)
    write_checkpoint(model_dir, 20, quality=1.0)
    scene_list = scenes()
    reference = frechet.GaussianStats(6)
    reference.update(colour_features([synthetic_render.render(scene, SIZE, SIZE) for scene in scenes(40, seed=1)]))
    reference.save(str(tmp_path / "reference.npz"))
    fvd = metrics.FVD(i3d_weights=None, reference_stats=str(tmp_path / "reference.npz"), clip_frames=4,
                      frame_stride=2, features=colour_features)
    return {"model_dir": model_dir, "prompts": [synthetic_render.caption(scene) for scene in scene_list],
            "scenes": scene_list, "metrics": [metrics.SyntheticQuality(), fvd]}


def read_scalars(eval_dir):
    accumulator = event_accumulator.EventAccumulator(eval_dir, size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    return {tag: {event.step: float(tf.make_ndarray(event.tensor_proto)) for event in accumulator.Tensors(tag)}
            for tag in accumulator.Tags()["tensors"]}


def test_two_checkpoints_give_a_metrics_file_each_and_tensorboard_scalars(run):
    generator = StandInGenerator(run["scenes"])
    results = job.evaluate(run["model_dir"], run["prompts"], run["metrics"], generator, name="synthetic")
    assert sorted(results) == [10, 20] and generator.calls == [10, 20]
    eval_dir = os.path.join(run["model_dir"], "eval", "synthetic")
    files = sorted(name for name in os.listdir(eval_dir) if name.endswith(".json"))
    assert files == ["metrics_00000010.json", "metrics_00000020.json"]
    results = job.read_results(run["model_dir"], "synthetic")
    good, noise = results[20], results[10]
    assert good["num_videos"] == len(run["prompts"]) and good["video_shape"] == [FRAMES, SIZE, SIZE, 3]
    # Rendered ground truth scores perfectly on the synthetic attributes and is close to the real statistics.
    assert good["metrics"]["synthetic/object_color"] == 1.0 and good["metrics"]["synthetic/shape"] == 1.0
    assert noise["metrics"].get("synthetic/object_color", 0.0) < 0.5
    assert good["metrics"]["fvd"] < noise["metrics"]["fvd"]
    scalars = read_scalars(eval_dir)
    for step, payload in ((10, noise), (20, good)):
        for name, value in payload["metrics"].items():
            assert scalars[name][step] == pytest.approx(value, rel=1e-6)


def test_killed_job_resumes_without_recomputing_finished_checkpoints(run):
    killed = StandInGenerator(run["scenes"], fail_on_step=20)
    with pytest.raises(KeyboardInterrupt):
        job.evaluate(run["model_dir"], run["prompts"], run["metrics"], killed, name="synthetic")
    eval_dir = os.path.join(run["model_dir"], "eval", "synthetic")
    first = open(job.metrics_path(eval_dir, 10)).read()
    assert job.evaluated_steps(eval_dir) == {10}
    resumed = StandInGenerator(run["scenes"])
    results = job.evaluate(run["model_dir"], run["prompts"], run["metrics"], resumed, name="synthetic")
    assert resumed.calls == [20] and sorted(results) == [20]
    assert open(job.metrics_path(eval_dir, 10)).read() == first
    assert job.evaluate(run["model_dir"], run["prompts"], run["metrics"], resumed, name="synthetic") == {}
    assert set(read_scalars(eval_dir)["fvd"]) == {10, 20}


def test_unfinished_saves_are_skipped_and_missing_steps_are_errors(run):
    os.makedirs(os.path.join(run["model_dir"], "checkpoints", "30.orbax-checkpoint-tmp-123", "state"))
    os.makedirs(os.path.join(run["model_dir"], "checkpoints", "40", "state"))  # no _METADATA: not finished
    assert job.finished_checkpoint_steps(run["model_dir"]) == [10, 20]
    generator = StandInGenerator(run["scenes"])
    with pytest.raises(FileNotFoundError, match=r"steps \[40\]"):
        job.evaluate(run["model_dir"], run["prompts"], run["metrics"], generator, steps=[20, 40])
    os.makedirs(os.path.join(run["model_dir"], "eval", "default", "videos", "00000020"))
    job.evaluate(run["model_dir"], run["prompts"], run["metrics"], generator, steps=[20], samples_per_prompt=2,
                 keep_videos=False)
    assert generator.calls == [20]
    assert not os.path.exists(os.path.join(run["model_dir"], "eval", "default", "videos", "00000020"))
    assert job.read_results(run["model_dir"])[20]["num_videos"] == 2 * len(run["prompts"])


@gin.configurable
def stand_in_generator(step_dir, prompts, seeds, work_dir):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (FRAMES, SIZE, SIZE, 3), np.uint8) for _ in prompts]


def test_command_line_runs_the_shipped_synthetic_config(run, capsys):
    try:
        status = evaluate_main.main(["--gin_file=evaluate/synthetic.gin", f"--gin.MODEL_DIR={run['model_dir']}",
                                     "--gin.evaluate.generator=@stand_in_generator",
                                     "--gin.synthetic_prompts.num_prompts=3", "--steps=20"])
    finally:
        gin.clear_config()
    assert status == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed["evaluated"]) == ["20"]
    assert "synthetic/temporal_consistency" in printed["evaluated"]["20"]
    assert job.read_results(run["model_dir"], "synthetic")[20]["num_videos"] == 3


def test_command_line_requires_model_dir(capsys):
    try:
        status = evaluate_main.main(["--gin_file=evaluate/synthetic.gin"])
    finally:
        gin.clear_config()
    assert status == 2 and "MODEL_DIR" in capsys.readouterr().err


@pytest.mark.parametrize("gin_file, macros", [
    ("evaluate/ucf101.gin", ("UCF101_DATA_DIR", "I3D_WEIGHTS", "C3D_WEIGHTS", "UCF101_I3D_STATS")),
    ("evaluate/prompt_file.gin", ("PROMPT_FILE", "CLIP_WEIGHTS", "CLIP_VOCAB", "CLIP_MERGES")),
])
def test_shipped_configs_bind_existing_configurables(gin_file, macros):
    bindings = ["MODEL_DIR = '/tmp/run'", *(f"{macro} = '/x'" for macro in macros)]
    gin.add_config_file_search_path(os.path.join(os.path.dirname(__file__), "..", "..", "gin_configs"))
    try:
        gin.parse_config_files_and_bindings([gin_file], bindings)
        assert gin.query_parameter("evaluate.model_dir") is not None
        assert len(gin.query_parameter("evaluate.metrics")) >= 1
    finally:
        gin.clear_config()


def test_watch_picks_up_checkpoints_written_while_it_runs(tmp_path):
    model_dir = str(tmp_path / "run")
    write_checkpoint(model_dir, 10, quality=1.0)
    scene_list = scenes(2)
    inner = StandInGenerator(scene_list)

    def generator(step_dir, prompts, seeds, work_dir):
        if len(inner.calls) == 0:  # the trainer saves its next checkpoint while step 10 is evaluated
            write_checkpoint(model_dir, 20, quality=0.0)
        return inner(step_dir, prompts, seeds, work_dir)

    results = job.evaluate(model_dir, [synthetic_render.caption(scene) for scene in scene_list],
                           [metrics.SyntheticQuality()], generator,
                           watch=job.WatchConfig(final_step=20, poll_seconds=0.0))
    assert sorted(results) == [10, 20] and inner.calls == [10, 20]


def test_command_line_names_unbound_sampling_settings(run, capsys):
    try:
        status = evaluate_main.main(["--gin_file=evaluate/synthetic.gin", "--gin_file=evaluate/sampling.gin",
                                     f"--gin.MODEL_DIR={run['model_dir']}", "--gin.synthetic_prompts.num_prompts=1"])
    finally:
        gin.clear_config()
    error = capsys.readouterr().err
    assert status == 2 and "Required bindings for `sample_videos`" in error and "'models'" in error


def test_checkpoints_read_and_results_written_on_gcs(run, gcs_emulator, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bucket = gcs_emulator.new_bucket()
    model_dir = f"{bucket}/run"
    write_checkpoint(model_dir, 10, quality=0.0)
    write_checkpoint(model_dir, 20, quality=1.0)
    generator = StandInGenerator(run["scenes"])
    results = job.evaluate(model_dir, run["prompts"], run["metrics"], generator, name="synthetic")
    assert sorted(results) == [10, 20] and generator.calls == [10, 20]
    objects = gcs_emulator.objects(bucket, "run/eval/synthetic/")
    assert {"run/eval/synthetic/metrics_00000010.json", "run/eval/synthetic/metrics_00000020.json"} <= set(objects)
    events = [name for name in objects if "/events.out.tfevents." in name]
    assert len(events) == 1
    assert not os.path.exists(tmp_path / "gs:")

    # The same numbers as an evaluation of the same checkpoints in a local folder, in JSON and TensorBoard.
    local = job.evaluate(run["model_dir"], run["prompts"], run["metrics"], StandInGenerator(run["scenes"]),
                         name="synthetic")
    from_bucket = job.read_results(model_dir, "synthetic")
    assert {step: payload["metrics"] for step, payload in from_bucket.items()} == {
        step: payload["metrics"] for step, payload in local.items()}
    downloaded = tmp_path / "events"
    downloaded.mkdir()
    gcs_emulator.client().bucket(bucket.removeprefix("gs://")).blob(events[0]).download_to_filename(
        os.fspath(downloaded / os.path.basename(events[0])))
    scalars = read_scalars(os.fspath(downloaded))
    for step, payload in local.items():
        for name, value in payload["metrics"].items():
            assert scalars[name][step] == pytest.approx(value, rel=1e-6)

    # Finished steps are found on gs:// too: a rerun computes nothing.
    rerun = StandInGenerator(run["scenes"])
    assert job.evaluate(model_dir, run["prompts"], run["metrics"], rerun, name="synthetic") == {}
    assert rerun.calls == []
