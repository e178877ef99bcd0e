"""The sampling job on a pod of 2 processes (tests/pod_harness.py), 4 fake CPU devices each, writing to a GCS
bucket: every row is sampled once by the whole pod and written once (process 0), with the same pixels as one
process; a rerun on the pod finds every row finished."""

import io
import json
import os

import numpy as np
from test_job_gcs import bucket_job, rows  # noqa: F401 -- the bucket fixture (checkpoints, prompts, image)

import pod_harness
from lumiere_jax import storage
from lumiere_jax.sample import cli
from tiny_setup import sample_argv

HERE = os.path.dirname(os.path.abspath(__file__))


def run_pod(bucket_job, gcs_emulator, prompts, output_dir, log_dir):  # noqa: F811
    env = {**gcs_emulator.env, "PYTHONPATH": os.pathsep.join([HERE, pod_harness.REPO])}
    pod = pod_harness.launch("lumiere_jax.sample", [
        *sample_argv(bucket_job["gin"], prompts, output_dir, bucket_job["models"],
                     "--gin.ModelsConfig.use_ssr=False"), "--compilation_cache_dir="], env, log_dir)
    assert pod.wait(timeout=300) == [0, 0], pod.log(0)[-3000:] + pod.log(1)[-3000:]
    return pod


def test_two_hosts_write_each_row_once_and_agree_on_what_is_left(bucket_job, gcs_emulator, tmp_path):  # noqa: F811
    bucket = bucket_job["bucket"]
    five = [{**row, "id": f"{row['id']}_{index}"} for index in range(3) for row in rows("image.png")][:5]
    prompts = f"{bucket}/inputs/five.jsonl"
    storage.write_text_atomic(prompts, "\n".join(json.dumps(row) for row in five) + "\n")
    output_dir = f"{bucket}/pod_videos"
    pod = run_pod(bucket_job, gcs_emulator, prompts, output_dir, tmp_path / "first")
    for index in range(2):
        assert "5 rows, 0 already finished, 5 to sample" in pod.log(index)
    client = gcs_emulator.client().bucket(bucket.removeprefix("gs://"))
    names = {blob.name: blob.generation for blob in client.list_blobs(prefix="pod_videos/")}
    expected = {f"pod_videos/{row['id']}.{ext}" for row in five for ext in ("mp4", "npy", "json")}
    assert expected | {"pod_videos/config.gin", "pod_videos/summary-0-of-1.json"} == set(names)

    # The same rows from one process: the same pixels (the pod split the batch over 8 devices).
    single_dir = os.fspath(tmp_path / "single")
    assert cli.main(sample_argv(bucket_job["gin"], prompts, single_dir, bucket_job["models"],
                                "--gin.ModelsConfig.use_ssr=False")) == 0
    for row in five:
        from_pod = np.load(io.BytesIO(client.blob(f"pod_videos/{row['id']}.npy").download_as_bytes()))
        np.testing.assert_array_equal(from_pod, np.load(os.path.join(single_dir, f"{row['id']}.npy")))

    # A rerun on the pod: both hosts see every row finished, nothing but the summary is written again.
    rerun = run_pod(bucket_job, gcs_emulator, prompts, output_dir, tmp_path / "rerun")
    for index in range(2):
        assert "5 rows, 5 already finished, 0 to sample" in rerun.log(index)
    after = {blob.name: blob.generation for blob in client.list_blobs(prefix="pod_videos/")}
    assert {name for name in after if after[name] != names[name]} == {"pod_videos/summary-0-of-1.json"}
