"""The demo's conditioning check is wired in: with the stages replaced by stand-ins that write known clips,
`main` writes the first-frame and static-region errors to quality.json and prints them."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from lumiere_jax import demo


def test_demo_reports_first_frame_and_static_region_errors(tmp_path, monkeypatch, capsys):
    commands, expected = {}, {}

    def fake_run(command, log_name, out_dir):
        commands[log_name] = command
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
    monkeypatch.setattr(demo, "quality_report", lambda video_dir: {"metrics": {}, "chance": {}, "num_videos": 0})
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
    printed = capsys.readouterr().out
    assert "cinemagraph_static_region_mae" in printed and "HIGH" in printed
    assert f"page: {tmp_path / 'quick' / 'index.html'}" in printed  # written even with the stages' outputs missing
    assert "contact_sheet.png: not found" in (tmp_path / "quick" / "index.html").read_text()
