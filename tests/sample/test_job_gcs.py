"""The sampling job with everything on a GCS bucket (the emulator): training checkpoint, prompt file, condition
image and outputs. Same frames as the job on local folders, resumption on gs://, and no local `gs:` folder."""

import io
import json
import os
import tempfile

import av
import numpy as np
import pytest

from lumiere_jax import storage
from lumiere_jax.sample import cli
from tiny_setup import NUM_FRAMES, SIZE, sample_argv, write_gin, write_rows

ROW_IDS = ("t2v", "i2v")
ROW_FILES = tuple(f"{row_id}.{extension}" for row_id in ROW_IDS for extension in ("mp4", "npy", "json"))


def rows(image: str) -> list[dict]:
    return [{"prompt": "a red circle moving right", "id": "t2v"},
            {"prompt": "a blue square", "mode": "i2v", "image": image, "id": "i2v"}]


def local_gs_paths(*roots: str) -> list[str]:
    """Every path named `gs:` under `roots`: what `os.path.abspath("gs://...")` would have created."""
    found = []
    for root in roots:
        found += [os.path.join(folder, name) for folder, names, files in os.walk(root) for name in names + files
                  if name == "gs:"]
    return found


@pytest.fixture(scope="module")
def bucket_job(tmp_path_factory, tiny_models, condition_files, gcs_emulator):
    """Checkpoints, prompts (a relative image path) and the condition image uploaded to a fresh bucket."""
    root = tmp_path_factory.mktemp("gcs_job")
    bucket = gcs_emulator.new_bucket()
    storage.copy_tree(tiny_models["base_dir"], f"{bucket}/runs/base")
    storage.copy_tree(tiny_models["ssr_dir"], f"{bucket}/runs/ssr")
    storage.copy_file(condition_files["image"], f"{bucket}/inputs/image.png")
    local_prompts = write_rows(os.fspath(root / "rows.jsonl"), rows(condition_files["image"]))
    storage.write_text_atomic(f"{bucket}/inputs/rows.jsonl",
                              "\n".join(json.dumps(row) for row in rows("image.png")) + "\n")
    models = {"base_dir": f"{bucket}/runs/base", "ssr_dir": f"{bucket}/runs/ssr"}
    return {"root": root, "bucket": bucket, "gin": write_gin(os.fspath(root / "tiny.gin")),
            "prompts": f"{bucket}/inputs/rows.jsonl", "local_prompts": local_prompts, "models": models}


def run_base_only(setup, prompts, output_dir, models):
    assert cli.main(sample_argv(setup["gin"], prompts, output_dir, models, "--gin.ModelsConfig.use_ssr=False")) == 0


def test_sampling_from_and_to_gcs(bucket_job, tiny_models, gcs_emulator, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bucket, output_dir = bucket_job["bucket"], f"{bucket_job['bucket']}/videos"
    run_base_only(bucket_job, bucket_job["prompts"], output_dir, bucket_job["models"])

    written = gcs_emulator.objects(bucket, "videos/")
    assert set(written) == {f"videos/{name}" for name in (*ROW_FILES, "config.gin", "summary-0-of-1.json")}
    client_bucket = gcs_emulator.client().bucket(bucket.removeprefix("gs://"))
    for row_id in ROW_IDS:
        local_mp4 = tmp_path / f"{row_id}.mp4"
        client_bucket.blob(f"videos/{row_id}.mp4").download_to_filename(os.fspath(local_mp4))
        with av.open(os.fspath(local_mp4)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert len(frames) == NUM_FRAMES and frames[0].shape == (SIZE, SIZE, 3)
        sidecar = json.loads(client_bucket.blob(f"videos/{row_id}.json").download_as_bytes())
        assert sidecar["base_checkpoint"]["source"] == f"{bucket}/runs/base/checkpoints/7"
        assert sidecar["files"] == {"mp4": f"{row_id}.mp4", "npy": f"{row_id}.npy"}
    assert json.loads(client_bucket.blob("videos/i2v.json").download_as_bytes())["row"]["image"] == (
        f"{bucket}/inputs/image.png")

    # The same rows sampled from the local checkpoints and files give the same frames.
    local_dir = os.fspath(tmp_path / "local_videos")
    run_base_only(bucket_job, bucket_job["local_prompts"], local_dir, tiny_models)
    for row_id in ROW_IDS:
        from_bucket = np.load(io.BytesIO(client_bucket.blob(f"videos/{row_id}.npy").download_as_bytes()))
        np.testing.assert_array_equal(np.load(os.path.join(local_dir, f"{row_id}.npy")), from_bucket)

    # A rerun finds every row finished: no row object is written again, only the shard summary.
    generations = {blob.name: blob.generation for blob in client_bucket.list_blobs(prefix="videos/")}
    run_base_only(bucket_job, bucket_job["prompts"], output_dir, bucket_job["models"])
    rerun = {blob.name: blob.generation for blob in client_bucket.list_blobs(prefix="videos/")}
    assert {name for name in rerun if rerun[name] != generations.get(name)} == {"videos/summary-0-of-1.json"}
    summary = json.loads(client_bucket.blob("videos/summary-0-of-1.json").download_as_bytes())
    assert summary["skipped_finished"] == 2 and summary["generated"] == 0 and summary["output_dir"] == output_dir

    assert local_gs_paths(os.fspath(tmp_path), bucket_job["root"]) == []
    assert not os.path.exists(os.path.join(tempfile.gettempdir(), "gs:"))
