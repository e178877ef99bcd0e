"""video_folder: a folder of mp4s + captions -> clips (skipping bad files) -> seqio batches."""

import csv
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lumiere_jax.data import pipeline, tasks, video_folder, video_io

# name: (number of frames, fps, height, width, caption); frame k has grey level 2k.
_VIDEOS = {
    "landscape.mp4": (60, 24, 48, 64, "a grey ramp, wide"),
    "portrait.mp4": (100, 20, 64, 40, "a grey ramp, tall"),
    "sub/square.mp4": (75, 30, 32, 32, "a grey ramp, square"),
    "short.mp4": (10, 24, 32, 32, "too short for one clip"),
    "no_caption.mp4": (60, 24, 32, 32, ""),
}


def _ramp(num_frames, height, width):
    levels = (2 * np.arange(num_frames)).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).copy()


def _expected_clips(num_frames, fps, target_fps=8.0, clip_frames=16):
    resampled = int(np.floor(num_frames / fps * target_fps + 1e-6))
    return max(0, (resampled - clip_frames) // clip_frames + 1)


@pytest.fixture(scope="module")
def video_folder_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_folder")
    manual = root / "manual"
    (manual / "sub").mkdir(parents=True)
    rows = []
    for name, (num_frames, fps, height, width, caption) in _VIDEOS.items():
        video_io.write_mp4(manual / name, _ramp(num_frames, height, width), fps)
        rows.append({"path": name, "caption": caption})
    (manual / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    rows.append({"path": "corrupt.mp4", "caption": "never decoded"})
    rows.append({"path": "missing.mp4", "caption": "file does not exist"})
    with open(manual / "captions.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    data_dir = str(root / "data")
    builder = tfds.builder("video_folder/tiny", data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    return builder, data_dir


def test_build_skips_bad_videos_and_counts_them(video_folder_dir):
    builder, _ = video_folder_dir
    assert dict(builder.skipped) == {"unreadable": 2, "too_short": 1, "missing_caption": 1}
    good = {name: spec for name, spec in _VIDEOS.items() if spec[4] and name != "short.mp4"}
    expected = sum(_expected_clips(spec[0], spec[1]) for spec in good.values())
    assert builder.info.splits["train"].num_examples == expected == 4


def test_clips_are_resampled_cut_and_captioned(video_folder_dir):
    builder, _ = video_folder_dir
    for example in tfds.as_numpy(builder.as_dataset(split="train")):
        name = example["source_path"].decode()
        num_frames, fps, _, _, caption = _VIDEOS[name]
        assert example["caption"].decode() == caption
        assert example["video"].shape == (16, 32, 32, 3)
        # Target frame j shows the source frame floor((start + j) * fps / 8), grey level 2x that.
        target = example["start_frame"] + np.arange(16)
        expected_level = 2 * np.floor(target * fps / 8.0 + 1e-6)
        np.testing.assert_allclose(example["video"].mean(axis=(1, 2, 3)), expected_level, atol=3)


def test_read_back_through_seqio(video_folder_dir):
    _, data_dir = video_folder_dir
    tasks.register_video_folder_task("my_videos_tiny", "tiny", data_dir, num_frames=8, frame_stride=2)
    config = pipeline.InputConfig("my_videos_tiny", global_batch_size=4, text_length=24, seed=3)
    batch = next(pipeline.DataIterator(config))
    assert batch["video"].shape == (4, 8, 32, 32, 3) and batch["video"].dtype == np.float32
    assert -1.0 <= batch["video"].min() <= batch["video"].max() <= 1.0
    # Frame sampling keeps stride 2 between grey levels of the same clip.
    levels = (batch["video"].mean(axis=(2, 3, 4)) + 1.0) * 127.5  # [B, 8]
    steps = np.diff(levels, axis=1)
    assert np.all(steps > 0)
    assert batch["text_tokens"].shape == (4, 24) and batch["text_mask"][:, 0].all()


def test_resize_and_center_crop_keeps_the_centre():
    frame = np.zeros((1, 48, 64, 3), np.uint8)
    frame[:, :, 16:48] = 255  # white middle half of a wide frame
    out = video_folder.resize_and_center_crop(frame, 32, 32)
    assert out.shape == (1, 32, 32, 3)
    # 64 -> 43 columns (scale 2/3), crop starts at 5: white spans about columns 6..26.
    assert out[0, :, :4].max() == 0 and out[0, :, 28:].max() == 0
    assert out[0, :, 8:25].min() == 255


def test_resample_frames_reference():
    frames = np.arange(30)[:, None, None, None]
    np.testing.assert_array_equal(
        video_folder.resample_frames(frames, 30.0, 10.0)[:, 0, 0, 0], np.arange(0, 30, 3))
    np.testing.assert_array_equal(
        video_folder.resample_frames(frames, 10.0, 20.0)[:, 0, 0, 0], np.repeat(np.arange(30), 2))


def test_caption_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="captions"):
        video_folder.load_captions(str(tmp_path))
    (tmp_path / "captions.jsonl").write_text(
        json.dumps({"path": "a.mp4", "caption": "first"}) + "\n" + json.dumps({"file": "b.mp4"}) + "\n")
    with pytest.raises(ValueError, match="row 2"):
        video_folder.load_captions(str(tmp_path))
    (tmp_path / "captions.jsonl").write_text(json.dumps({"path": "a.mp4", "caption": " first "}) + "\n")
    assert video_folder.load_captions(str(tmp_path)) == [("a.mp4", "first")]


def test_too_short_clip_error_names_the_fix():
    with pytest.raises(video_folder.ClipTooShortError, match="lower num_frames or fps"):
        video_folder.cut_clips(np.zeros((5, 2, 2, 3), np.uint8), 8, 8)
