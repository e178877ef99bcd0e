"""One storage layer for every artifact: local paths and object-store URIs (`gs://...`) alike.

Everything a job writes to a run or output directory (checkpoints beside Orbax, data snapshots, gin configs,
TensorBoard events, videos, JSON sidecars, exports, evaluation results, the text cache) goes through here.

Built on etils `epath`, the path library Orbax itself uses. For `gs://` it talks to GCS through `gcsfs`
(`EPATH_USE_TF=false`, set when this module is imported unless the user set it): `tf.io.gfile`'s GCS endpoint
is fixed, so only `gcsfs` (and TensorStore, Orbax's array writer) can also be pointed at an emulator
(`STORAGE_EMULATOR_HOST`, `TENSORSTORE_GCS_HTTP_URL`), and one client for all our files keeps behaviour the
same in tests and on a pod. What TensorFlow writes itself (tf.data iterator checkpoints, TFRecords, event
files) is written to a local staging folder and uploaded through this module.

Commits (no renames on object stores, where a rename is a copy and a delete):
  - a file: `write_bytes_atomic`: locally a temporary file renamed into place; on an object store one object
    upload, which becomes visible only once complete.
  - a directory: `upload_directory` writes every file, then the marker `COMMIT_MARKER` last; readers treat a
    directory without its marker as absent (`is_committed`).
No local directory is ever created from a URI: local paths are made absolute, URIs are kept as they are.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("EPATH_USE_TF", "false")

from etils import epath  # after the backend choice above

COMMIT_MARKER = "COMMITTED"
URI_SCHEMES = ("gs://", "s3://", "az://")


def is_uri(path: str | os.PathLike) -> bool:
    """True for an object-store URI (`gs://bucket/...`)."""
    return os.fspath(path).startswith(URI_SCHEMES)


def normalize(path: str | os.PathLike) -> str:
    """A URI unchanged (never `abspath`: that turns `gs://b/x` into `<cwd>/gs:/b/x`); a local path made absolute."""
    path = os.fspath(path)
    return path.rstrip("/") if is_uri(path) else os.path.abspath(os.path.expanduser(path))


def join(base: str | os.PathLike, *parts: str) -> str:
    """Joins with `/`, for URIs and local paths alike."""
    return "/".join([os.fspath(base).rstrip("/"), *(part.strip("/") for part in parts)])


def parent(path: str | os.PathLike) -> str:
    """The folder holding `path` (a URI stays a URI)."""
    path = normalize(path)
    return path.rsplit("/", 1)[0] if is_uri(path) else os.path.dirname(path)


def resolve(base_dir: str | os.PathLike, path: str | os.PathLike) -> str:
    """`path` as given when it is a URI or absolute (after `~` expansion), else relative to `base_dir`."""
    path = os.fspath(path)
    if is_uri(path):
        return path
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else join(base_dir, path)


def as_path(path: str | os.PathLike) -> epath.Path:
    return epath.Path(normalize(path))


def exists(path: str | os.PathLike) -> bool:
    return as_path(path).exists()


def isdir(path: str | os.PathLike) -> bool:
    return as_path(path).is_dir()


def isfile(path: str | os.PathLike) -> bool:
    return as_path(path).is_file()


def listdir(path: str | os.PathLike) -> list[str]:
    """Names in a directory (empty when it does not exist)."""
    folder = as_path(path)
    if not folder.is_dir():
        return []
    return sorted(child.name for child in folder.iterdir())


def makedirs(path: str | os.PathLike) -> None:
    """Creates a local directory; object stores have no directories (nothing is written for a URI)."""
    if not is_uri(path):
        os.makedirs(normalize(path), exist_ok=True)


def read_bytes(path: str | os.PathLike) -> bytes:
    return as_path(path).read_bytes()


def read_text(path: str | os.PathLike) -> str:
    return as_path(path).read_text()


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(read_text(path))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` so that readers see the old content or all of the new one, never part of it."""
    if is_uri(path):
        as_path(path).write_bytes(data)  # one object upload: visible only when complete
        return
    target = normalize(path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".tmp_")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True))


@contextlib.contextmanager
def atomic_local_file(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """A local temporary file for a library that writes only to local files (PyAV, TFRecordWriter ...); on a
    clean exit it becomes `path` atomically (renamed into place locally, one object upload for a URI)."""
    if is_uri(path):
        with tempfile.TemporaryDirectory(prefix="lumiere_write_") as folder:
            temporary = os.path.join(folder, "file" + suffix)
            yield temporary
            with open(temporary, "rb") as file:
                write_bytes_atomic(path, file.read())
        return
    target = normalize(path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=suffix, dir=os.path.dirname(target), prefix=".tmp_")
    os.close(handle)
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


@contextlib.contextmanager
def local_file(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """A local file holding `path`'s bytes, for a library that reads only local files: `path` itself when
    local, else a temporary download (named with `suffix`, for readers that go by the extension)."""
    if not is_uri(path):
        yield normalize(path)
        return
    with tempfile.TemporaryDirectory(prefix="lumiere_read_") as folder:
        temporary = os.path.join(folder, "file" + suffix)
        with open(temporary, "wb") as file:
            file.write(read_bytes(path))
        yield temporary


def remove(path: str | os.PathLike) -> None:
    """Removes a file or a whole directory tree; nothing happens when it does not exist."""
    target = as_path(path)
    if target.is_dir():
        target.rmtree(missing_ok=True)
    elif target.exists():
        target.unlink(missing_ok=True)


def copy_file(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Copies one file between any two locations (local or object store), atomically at the destination."""
    write_bytes_atomic(destination, read_bytes(source))


def upload_directory(local_dir: str, destination: str | os.PathLike,
                     before_commit: Callable[[], Any] | None = None) -> None:
    """Copies a local directory tree to `destination`, then writes `COMMIT_MARKER` there last.

    A previous, uncommitted attempt at the same destination is removed first, so no stale files mix in.
    `before_commit()` runs between the files and the marker (fault-injection tests).
    """
    if exists(destination):
        remove(destination)
    for root, _, names in os.walk(local_dir):
        for name in sorted(names):
            relative = os.path.relpath(os.path.join(root, name), local_dir).replace(os.sep, "/")
            copy_file(os.path.join(root, name), join(destination, relative))
    if before_commit is not None:
        before_commit()
    write_text_atomic(join(destination, COMMIT_MARKER), "")


def is_committed(directory: str | os.PathLike) -> bool:
    return exists(join(directory, COMMIT_MARKER))


def _relative_files(root: str | os.PathLike) -> list[str]:
    """`/`-separated paths of every file under `root`, relative to it (gcsfs's walk drops the `gs://`)."""
    base = normalize(root).split("://", 1)[-1]
    files = []
    for folder, _, names in as_path(root).walk():
        relative = os.fspath(folder).split("://", 1)[-1][len(base):].strip("/")
        files += [f"{relative}/{name}" if relative else name for name in names]
    return sorted(files)


def download_directory(source: str | os.PathLike, local_dir: str) -> None:
    """Copies a directory tree (local or object store) into the local folder `local_dir`."""
    for relative in _relative_files(source):
        target = os.path.join(local_dir, *relative.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as file:
            file.write(read_bytes(join(source, relative)))


@contextlib.contextmanager
def local_copy(source: str | os.PathLike) -> Iterator[str]:
    """A local folder holding `source`'s files: `source` itself when local, else a temporary download."""
    if not is_uri(source):
        yield normalize(source)
        return
    with tempfile.TemporaryDirectory(prefix="lumiere_download_") as folder:
        download_directory(source, folder)
        yield folder


def mirror_directory(source: str | os.PathLike, fingerprint: str, local_root: str | None = None) -> str:
    """A lasting local copy of a finished directory that no longer changes, for readers of local files only.

    `source` itself when local; for a URI its files are downloaded once per (`source`, `fingerprint`) into
    `local_root` (default `<tmp>/lumiere_mirrors`) and renamed into place whole, so a folder found there is
    complete, also with several processes on one host. `fingerprint` must change whenever the content does
    (e.g. the manifest that commits the directory).
    """
    if not is_uri(source):
        return normalize(source)
    root = local_root or os.path.join(tempfile.gettempdir(), "lumiere_mirrors")
    key = hashlib.sha256(f"{normalize(source)}\n{fingerprint}".encode()).hexdigest()[:24]
    target = os.path.join(root, key)
    if os.path.isdir(target):
        return target
    os.makedirs(root, exist_ok=True)
    download = tempfile.mkdtemp(prefix=f".tmp_{key}_", dir=root)
    try:
        download_directory(source, download)
        try:
            os.rename(download, target)
        except OSError:
            if not os.path.isdir(target):
                raise  # not another process finishing the same copy first
    finally:
        shutil.rmtree(download, ignore_errors=True)
    return target


@contextlib.contextmanager
def staged_directory(destination: str | os.PathLike,
                     before_commit: Callable[[], Any] | None = None) -> Iterator[str]:
    """A local temporary folder to fill; on a clean exit it is uploaded to `destination` and committed."""
    with tempfile.TemporaryDirectory(prefix="lumiere_stage_") as folder:
        yield folder
        upload_directory(folder, destination, before_commit)


def sync_file(local_path: str, destination: str | os.PathLike) -> None:
    """Uploads a local file that keeps growing (e.g. a TensorBoard event file) over its previous upload."""
    with open(local_path, "rb") as file:
        write_bytes_atomic(destination, file.read())


def move_directory(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Moves a directory tree: a rename on a local disk; on an object store a copy of each object, then a delete
    of the source (the destination is complete before anything is deleted)."""
    if not is_uri(source) and not is_uri(destination):
        os.makedirs(os.path.dirname(normalize(destination)), exist_ok=True)
        os.replace(normalize(source), normalize(destination))
        return
    for relative in _relative_files(source):
        as_path(join(source, relative)).copy(as_path(join(destination, relative)), overwrite=True)
    remove(source)


def invalidate_listing_cache() -> None:
    """Forgets gcsfs's cached directory listings (another host changed the bucket; ours would be stale)."""
    from etils.epath import backend  # noqa: PLC0415

    try:
        backend.fsspec_backend.fs("gs://").invalidate_cache()
    except ImportError:  # no gcsfs: nothing cached
        pass


def copy_tree(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Copies a directory tree between any two locations (no commit marker; see `upload_directory`)."""
    if not is_uri(source) and not is_uri(destination):
        shutil.copytree(normalize(source), normalize(destination), dirs_exist_ok=True)
        return
    with local_copy(source) as folder:
        for root, _, names in os.walk(folder):
            for name in names:
                relative = os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
                copy_file(os.path.join(root, name), join(destination, relative))
