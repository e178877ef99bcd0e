"""The demo's checks are wired in: with the stages replaced by stand-ins that write known clips, `main` writes the
first-frame and static-region errors and the SSR-versus-bilinear PSNR to quality.json and prints them; the scored
prompts' ground-truth renders score at the ceiling."""

import json
import os
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from lumiere_jax import demo
from lumiere_jax.data import synthetic_prompts
from lumiere_jax.evaluate import synthetic_quality


def numpy_psnr(estimate, reference):
    return 10 * np.log10(4.0 / np.mean((np.asarray(estimate, np.float64) - reference) ** 2))


def test_demo_reports_first_frame_and_static_region_errors(tmp_path, monkeypatch, capsys):
    commands, expected = {}, {}

    def fake_run(command, log_name, out_dir):
        commands[log_name] = command
        if log_name == "7_ssr_check":  # a stand-in SSR: nearest-neighbour upsampling of the given clips
            flags = dict(arg.split("=", 1) for arg in command if arg.startswith("--gin.upsample_clips."))
            with np.load(flags["--gin.upsample_clips.inputs"]) as arrays:
                expected["low_res"] = arrays["low_res"]
            nearest = np.repeat(np.repeat(expected["low_res"], 2, axis=2), 2, axis=3)
            np.savez(flags["--gin.upsample_clips.output"], video=nearest)
            return
        if not log_name.startswith("6_sample_conditional"):
            return
        output_dir = next(arg.split("=", 1)[1] for arg in command if arg.startswith("--gin.OUTPUT_DIR="))
        image = tf.io.decode_png(tf.io.read_file(os.path.join(out_dir, "condition_image.png")), channels=3).numpy()
        os.makedirs(output_dir, exist_ok=True)
        if log_name.endswith("model_only"):  # base-only 32x32 clips; i2v 51 levels brighter (clipped at 255)
            brighter = np.clip(image.astype(int) + 51, 0, 255)
            expected["i2v_first_frame_mae"] = np.mean(np.abs(brighter - image.astype(int))) / 127.5
            np.save(os.path.join(output_dir, "i2v_0.npy"), np.stack([brighter] * 8).astype(np.uint8))
            np.save(os.path.join(output_dir, "cinemagraph_0.npy"), np.stack([image] * 8))
            return
        large = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)  # the SSR's 64x64 frames
        np.save(os.path.join(output_dir, "i2v_0.npy"), np.stack([large] * 8))  # keeps the image exactly
        cinemagraph = np.stack([large] * 8)
        cinemagraph[:, :32] = 255 - cinemagraph[:, :32]  # the animated top half changes, on frame 0 too
        np.save(os.path.join(output_dir, "cinemagraph_0.npy"), cinemagraph)

    monkeypatch.setattr(demo, "run", fake_run)
    monkeypatch.setattr(demo, "contact_sheet", lambda dirs, path: 0)
    monkeypatch.setattr(demo, "quality_report",
                        lambda video_dir, frames: {"metrics": {}, "chance": {}, "num_videos": 0})
    assert demo.main(["--quick", f"--out_dir={tmp_path}"]) == 0
    assert "--gin.SamplingConfig.replace_known=True" in commands["6_sample_conditional"]
    assert "--gin.SamplingConfig.replace_known=False" in commands["6_sample_conditional_model_only"]
    assert "--gin.ModelsConfig.use_ssr=False" in commands["6_sample_conditional_model_only"]
    with open(tmp_path / "quick" / "quality.json") as file:
        report = json.load(file)
    conditioning, model_only = report["conditioning"], report["conditioning_model_only"]
    assert conditioning["i2v_first_frame_mae"] == 0.0
    assert conditioning["cinemagraph_static_region_mae"] == 0.0
    assert conditioning["cinemagraph_first_frame_mae"] > 0.1  # the animated half of frame 0 was changed
    assert model_only["i2v_first_frame_mae"] == pytest.approx(expected["i2v_first_frame_mae"], rel=1e-6)
    assert model_only["i2v_first_frame_mae"] > 0.1
    assert model_only["cinemagraph_static_region_mae"] == 0.0
    ssr = report["ssr_psnr"]
    truth = np.stack(demo.ground_truth_clips(64, 32, 8, 8)).astype(np.float64) / 127.5 - 1  # [8, 8, 64, 64, 3]
    low_res = truth.reshape(8, 8, 32, 2, 32, 2, 3).mean(axis=(3, 5))  # 2x2 area average
    np.testing.assert_allclose(expected["low_res"], low_res, atol=1e-6)
    assert len(ssr["clips"]) == 8
    for index, scores in enumerate(ssr["clips"].values()):
        nearest = np.repeat(np.repeat(low_res[index], 2, axis=1), 2, axis=2)
        assert scores["ssr"] == pytest.approx(numpy_psnr(nearest, truth[index]), rel=1e-5)
        assert 10 < scores["bilinear"] < 60
    assert ssr["mean"]["ssr"] == pytest.approx(np.mean([s["ssr"] for s in ssr["clips"].values()]))
    printed = capsys.readouterr().out
    assert "SSR versus bilinear" in printed and f"SSR closer on {ssr['ssr_closer']} of 8" in printed
    assert "cinemagraph_static_region_mae" in printed and "HIGH" in printed
    assert f"page: {tmp_path / 'quick' / 'index.html'}" in printed  # written even with the stages' outputs missing
    assert "contact_sheet.png: not found" in (tmp_path / "quick" / "index.html").read_text()


def test_ground_truth_renders_of_the_scored_prompts_score_at_the_ceiling():
    frames = demo.FULL.frames
    clips = demo.ground_truth_clips(demo.BASE_SIZE, demo.BASE_CLIP_FRAMES, frames, len(demo.SCORED))
    assert len(clips) == len(demo.SCORED) >= 16 and clips[0].shape == (frames, 32, 32, 3)
    result = synthetic_quality.score_videos(clips, [combination.caption() for combination in demo.SCORED])
    for name in ("object_color", "background_color", "shape", "motion"):
        assert result["metrics"][name] == 1.0, name
    assert result["metrics"]["temporal_consistency"] >= 0.95
    # Speed is named for the whole 16-frame dataset clip; an 8-frame window of a fast clip travels about as far
    # as a whole slow one, so only the slow prompts' speed is right.
    slow = np.mean([combination.speed == "slow" for combination in demo.SCORED])
    assert result["metrics"]["speed"] == pytest.approx(slow)
    held_out = [combination for combination in demo.SCORED if combination in synthetic_prompts.held_out_combinations()]
    assert len(held_out) == synthetic_prompts.NUM_HELD_OUT


@pytest.mark.parametrize("flags, shifted", [(["--long"], True), ([], False)])
def test_long_demo_trains_and_samples_its_base_on_the_shifted_schedule(tmp_path, monkeypatch, flags, shifted):
    commands = {}
    monkeypatch.setattr(demo, "run", lambda command, log_name, out_dir: commands.setdefault(log_name, command))
    monkeypatch.setattr(demo, "contact_sheet", lambda dirs, path: 0)
    monkeypatch.setattr(demo, "quality_report", lambda video_dir, frames: {"metrics": {}})
    monkeypatch.setattr(demo, "condition_report", lambda video_dir, image_path: {})
    monkeypatch.setattr(demo, "ssr_psnr_report", lambda out_dir, checkpoint, steps: {})
    monkeypatch.setattr(demo, "write_page", lambda out_dir, *args: os.path.join(out_dir, "index.html"))
    assert demo.main([*flags, f"--out_dir={tmp_path}"]) == 0
    schedule = ["--gin.DiffusionConfig.schedule='shifted_cosine'",
                "--gin.DiffusionConfig.schedule_kwargs={'resolution': 91, 'base_resolution': 32}"]
    base_stages = ["2_train_stunet", "4_finetune_conditional", "5_sample_text_to_video_base",
                   "5_sample_text_to_video_ssr", "6_sample_conditional", "6_sample_conditional_model_only"]
    for name, command in commands.items():
        assert all((flag in command) == (shifted and name in base_stages) for flag in schedule), name
    steps = "--gin.train.num_train_steps=24300" if shifted else "--gin.train.num_train_steps=450"
    assert steps in commands["2_train_stunet"]
    model_dir = next(arg for arg in commands["2_train_stunet"] if arg.startswith("--gin.MODEL_DIR="))
    assert model_dir == f"--gin.MODEL_DIR={tmp_path / ('long' if shifted else 'full') / 'runs' / 'stunet'}"


def test_quick_and_long_exclude_each_other(tmp_path):
    with pytest.raises(SystemExit):
        demo.main(["--quick", "--long", f"--out_dir={tmp_path}"])


def python_stage(code: str, name: str) -> tuple[list[str], str]:
    return [sys.executable, "-c", code], name


def test_lanes_run_their_stages_in_order_side_by_side(tmp_path):
    first, second, other = (tmp_path / name for name in ("first", "second", "other"))
    lanes = [
        [python_stage(f"import time; time.sleep(0.5); open({str(first)!r}, 'w')", "a_first"),
         # fails unless the lane's first stage finished before it started
         python_stage(f"import os; assert os.path.exists({str(first)!r}); open({str(second)!r}, 'w')", "a_second")],
        [python_stage(f"open({str(other)!r}, 'w')", "b_only")],
    ]
    demo.run_lanes(lanes, str(tmp_path))
    assert first.exists() and second.exists() and other.exists()
    assert other.stat().st_mtime < second.stat().st_mtime  # the other lane did not wait for the first lane
    assert all((tmp_path / f"{name}.log").exists() for name in ("a_first", "a_second", "b_only"))


def test_a_failing_stage_stops_the_other_lanes_and_names_itself(tmp_path):
    never = tmp_path / "never"
    lanes = [
        [python_stage("import time; time.sleep(120)", "slow"), python_stage(f"open({str(never)!r}, 'w')", "after")],
        [python_stage("import time, sys; time.sleep(1); sys.exit(3)", "broken")],
    ]
    start = time.perf_counter()
    with pytest.raises(SystemExit, match=r"stage broken failed with exit code 3"):
        demo.run_lanes(lanes, str(tmp_path))
    assert time.perf_counter() - start < 60  # the 120-second stage of the other lane was stopped
    assert not never.exists()  # and its lane started nothing after it


def test_the_data_stage_echoes_its_summary_not_tfds_progress():
    assert demo._is_progress("dataset ready: synthetic_motion/tiny in /data/synthetic_motion/tiny/1.1.0\n")
    shuffling = "Shuffling /data/synthetic_motion/tiny/incomplete.0NE8IH_1.1.0/synthetic_motion-train.tfrecord: 0%|\n"
    assert not demo._is_progress(shuffling)
