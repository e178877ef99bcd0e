"""Runs `gcp-storage-emulator` with the object-generation headers of real GCS on media downloads.

The emulator answers `GET ...?alt=media` without `x-goog-generation` / `x-goog-metageneration`; TensorStore (Orbax's
array reader and writer) reads an object's generation from that header and fails with "Malformed
StorageGeneration" without it. Usage: `python tests/gcs_emulator_server.py --host=127.0.0.1 --port=N`.
"""

import argparse
import functools

from gcp_storage_emulator.handlers import objects


def _with_generation_headers(download):
    @functools.wraps(download)
    def wrapped(request, response, storage, *args, **kwargs):
        download(request, response, storage, *args, **kwargs)
        if response.status.value in (200, 206):
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
            response["x-goog-generation"] = str(obj["generation"])
            response["x-goog-metageneration"] = str(obj["metageneration"])
    return wrapped


objects.download = _with_generation_headers(objects.download)  # before the server module builds its routes

from gcp_storage_emulator.server import create_server  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = create_server(args.host, args.port, in_memory=True)
    server.run()


if __name__ == "__main__":
    main()
