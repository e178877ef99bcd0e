"""A GCS-protocol server on 127.0.0.1 for tests (`gcp-storage-emulator` from PyPI), and the environment that
points every client at it: gcsfs / etils epath and google-cloud-storage (`STORAGE_EMULATOR_HOST`), TensorStore,
Orbax's array writer (`TENSORSTORE_GCS_HTTP_URL`, `GOOGLE_AUTH_TOKEN_FOR_TESTING`).

Checked: this emulator ignores generation preconditions (`ifGenerationMatch`), so nothing here relies on them;
our commits are "write everything, then one marker object last". It also sends no `x-goog-generation` header
with object downloads, which TensorStore's GCS driver reads ("Malformed StorageGeneration" when Orbax writes
OCDBT checkpoints to gs://); run as a script, this file starts the emulator with that header added.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def emulator_environment(url: str) -> dict[str, str]:
    return {
        "STORAGE_EMULATOR_HOST": url,
        "TENSORSTORE_GCS_HTTP_URL": url,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
        "GOOGLE_CLOUD_PROJECT": "lumiere-test",
        "EPATH_USE_TF": "false",
        # No gcsfs bucket-layout probe (a gRPC control-plane call), and any metadata-server lookup of
        # google-auth goes to a closed loopback port instead of the link-local GCE address.
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "GCE_METADATA_HOST": "127.0.0.1:9",
        "GCE_METADATA_IP": "127.0.0.1:9",
    }


class GcsEmulator:
    """The running server: `env` for subprocesses, `new_bucket()` for a fresh `gs://` bucket per test."""

    def __init__(self, url: str):
        self.url = url
        self.env = emulator_environment(url)

    def client(self):
        # Only the tests that talk to the bucket directly need the client library.
        from google.auth.credentials import AnonymousCredentials  # noqa: PLC0415
        from google.cloud import storage  # noqa: PLC0415

        return storage.Client(project="lumiere-test", credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": self.url})

    def new_bucket(self) -> str:
        name = f"bucket-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(name)
        return f"gs://{name}"

    def objects(self, bucket_uri: str, prefix: str = "") -> list[str]:
        """Names of the objects in a bucket (under `prefix`), read with google-cloud-storage."""
        bucket = bucket_uri.removeprefix("gs://").split("/")[0]
        return sorted(blob.name for blob in self.client().list_blobs(bucket, prefix=prefix or None))


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    """Starts the emulator for the session and points this process's clients at it."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path_factory.mktemp("gcs") / "emulator.log", "w")  # closed below
    server = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "start", "--host=127.0.0.1", f"--port={port}", "--in-memory"],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b?project=lumiere-test", timeout=1)
            break
        except OSError as error:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                raise RuntimeError(f"the GCS emulator did not start on {url}") from error
            time.sleep(0.2)
    previous = {name: os.environ.get(name) for name in emulator_environment(url)}
    os.environ.update(emulator_environment(url))
    try:
        yield GcsEmulator(url)
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.terminate()
        server.wait(timeout=10)
        log.close()


def _serve() -> None:
    """The emulator's command line, with downloads that also carry the object's generation headers."""
    from gcp_storage_emulator.exceptions import NotFound  # noqa: PLC0415 -- only the server process needs it
    from gcp_storage_emulator.handlers import objects  # noqa: PLC0415 -- patched before the server imports it

    download = objects.download

    def download_with_generation(request, response, storage, *args, **kwargs):
        download(request, response, storage, *args, **kwargs)
        try:
            stored = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        except NotFound:
            return
        response["x-goog-generation"] = str(stored["generation"])
        response["x-goog-metageneration"] = str(stored.get("metageneration", "1"))

    objects.download = download_with_generation
    from gcp_storage_emulator.__main__ import main  # noqa: PLC0415

    main(sys.argv[1:])


if __name__ == "__main__":
    _serve()
