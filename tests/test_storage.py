"""The storage layer on local folders and on a GCS bucket (the emulator), with the same calls."""

import os

import pytest

from lumiere_jax import storage


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path, gcs_emulator):
    if request.param == "local":
        return str(tmp_path / "root")
    return gcs_emulator.new_bucket() + "/root"


def test_uris_are_never_made_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.normalize("gs://bucket/run/") == "gs://bucket/run"
    assert storage.normalize("run") == str(tmp_path / "run")
    assert storage.join("gs://bucket/run", "checkpoints", "3") == "gs://bucket/run/checkpoints/3"
    storage.makedirs("gs://bucket/run")
    assert not os.path.exists(tmp_path / "gs:")


def test_files_round_trip_and_list(root):
    storage.write_json_atomic(storage.join(root, "a", "meta.json"), {"step": 3})
    storage.write_bytes_atomic(storage.join(root, "a", "blob.bin"), b"\x00\x01")
    assert storage.read_json(storage.join(root, "a", "meta.json")) == {"step": 3}
    assert storage.read_bytes(storage.join(root, "a", "blob.bin")) == b"\x00\x01"
    assert storage.listdir(storage.join(root, "a")) == ["blob.bin", "meta.json"]
    assert storage.isdir(storage.join(root, "a")) and storage.isfile(storage.join(root, "a", "blob.bin"))
    storage.write_bytes_atomic(storage.join(root, "a", "blob.bin"), b"new")
    assert storage.read_bytes(storage.join(root, "a", "blob.bin")) == b"new"
    storage.remove(storage.join(root, "a"))
    assert not storage.exists(storage.join(root, "a", "meta.json")) and storage.listdir(root) == []


def test_directory_commit_is_a_marker_written_last(root, tmp_path):
    local = tmp_path / "stage"
    (local / "sub").mkdir(parents=True)
    (local / "sub" / "x.txt").write_text("x")
    (local / "y.txt").write_text("y")
    target = storage.join(root, "dir")
    storage.write_text_atomic(storage.join(target, "stale.txt"), "from an interrupted attempt")
    assert not storage.is_committed(target)
    storage.upload_directory(str(local), target)
    assert storage.is_committed(target)
    assert storage.listdir(target) == sorted(["sub", "y.txt", storage.COMMIT_MARKER])
    with storage.local_copy(target) as folder:
        assert open(os.path.join(folder, "sub", "x.txt")).read() == "x"
    with storage.staged_directory(storage.join(root, "staged")) as folder:
        open(os.path.join(folder, "z.txt"), "w").write("z")
        assert not storage.is_committed(storage.join(root, "staged"))
    assert storage.is_committed(storage.join(root, "staged"))
    assert storage.read_text(storage.join(root, "staged", "z.txt")) == "z"


def test_gcs_writes_land_in_the_bucket(gcs_emulator, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bucket = gcs_emulator.new_bucket()
    storage.write_text_atomic(f"{bucket}/run/config.gin", "x = 1")
    assert gcs_emulator.objects(bucket) == ["run/config.gin"]
    assert not os.path.exists(tmp_path / "gs:")


def test_paths_resolve_against_local_folders_and_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.parent("gs://bucket/inputs/rows.jsonl") == "gs://bucket/inputs"
    assert storage.parent("inputs/rows.jsonl") == str(tmp_path / "inputs")
    assert storage.resolve("gs://bucket/inputs", "image.png") == "gs://bucket/inputs/image.png"
    assert storage.resolve("gs://bucket/inputs", "/data/image.png") == "/data/image.png"
    assert storage.resolve("/data", "gs://other/image.png") == "gs://other/image.png"
    assert storage.resolve("/data", "~/image.png") == os.path.expanduser("~/image.png")


def test_local_files_for_libraries_that_need_them(root):
    target = storage.join(root, "videos", "clip.mp4")
    with pytest.raises(RuntimeError):
        with storage.atomic_local_file(target, ".mp4") as temporary:
            open(temporary, "wb").write(b"half")
            raise RuntimeError("the encoder failed")
    assert not storage.exists(target)
    with storage.atomic_local_file(target, ".mp4") as temporary:
        assert temporary.endswith(".mp4") and not storage.is_uri(temporary)
        open(temporary, "wb").write(b"video bytes")
    assert storage.read_bytes(target) == b"video bytes"
    with storage.local_file(target, ".mp4") as local:
        assert not storage.is_uri(local) and open(local, "rb").read() == b"video bytes"
    assert storage.listdir(storage.join(root, "videos")) == ["clip.mp4"]  # no temporary left behind


def test_mirror_is_downloaded_once_per_fingerprint(root, tmp_path):
    source = storage.join(root, "split")
    storage.write_text_atomic(storage.join(source, "shard-0"), "a")
    storage.write_text_atomic(storage.join(source, "sub", "shard-1"), "b")
    mirror = storage.mirror_directory(source, "manifest 1", local_root=str(tmp_path / "mirrors"))
    if not storage.is_uri(root):
        assert mirror == storage.normalize(source)
        return
    assert open(os.path.join(mirror, "sub", "shard-1")).read() == "b"
    storage.write_text_atomic(storage.join(source, "shard-0"), "changed")
    assert storage.mirror_directory(source, "manifest 1", local_root=str(tmp_path / "mirrors")) == mirror
    assert open(os.path.join(mirror, "shard-0")).read() == "a"  # same fingerprint: no second download
    fresh = storage.mirror_directory(source, "manifest 2", local_root=str(tmp_path / "mirrors"))
    assert fresh != mirror and open(os.path.join(fresh, "shard-0")).read() == "changed"
    assert sorted(os.listdir(tmp_path / "mirrors")) == sorted([os.path.basename(mirror), os.path.basename(fresh)])
