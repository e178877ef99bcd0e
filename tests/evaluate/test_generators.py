"""Files the evaluation job reads and writes besides its results, on local folders and on a GCS bucket (the
emulator): the sampling generator's rows and `.npy` videos, and prompt files."""

import io
import json

import numpy as np
import pytest

from lumiere_jax import storage
from lumiere_jax.evaluate import generators
from lumiere_jax.evaluate import prompts


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path, gcs_emulator):
    if request.param == "local":
        return str(tmp_path / "work")
    return gcs_emulator.new_bucket() + "/work"


def test_rows_and_npy_videos(root):
    ids = generators.write_rows(storage.join(root, "prompts.jsonl"), ["a red circle", "a blue square"], [5, 6])
    assert ids == ["000000", "000001"]
    lines = storage.read_text(storage.join(root, "prompts.jsonl")).splitlines()
    assert [json.loads(line) for line in lines] == [{"id": "000000", "prompt": "a red circle", "seed": 5},
                                                    {"id": "000001", "prompt": "a blue square", "seed": 6}]
    videos = [np.full((2, 4, 4, 3), index, np.uint8) for index in range(2)]
    for row_id, video in zip(ids, videos):
        buffer = io.BytesIO()
        np.save(buffer, video)
        storage.write_bytes_atomic(storage.join(root, f"{row_id}.npy"), buffer.getvalue())
    loaded = generators.NpyVideos([storage.join(root, f"{row_id}.npy") for row_id in ids])
    assert len(loaded) == 2
    np.testing.assert_array_equal(loaded[1], videos[1])
    np.testing.assert_array_equal(np.stack(loaded[0:2]), np.stack(videos))


def test_prompt_file(root):
    storage.write_text_atomic(storage.join(root, "prompts.txt"), "a red circle\n\n  a blue square  \n")
    assert prompts.file_prompts(storage.join(root, "prompts.txt")) == ["a red circle", "a blue square"]
    storage.write_text_atomic(storage.join(root, "empty.txt"), "\n")
    with pytest.raises(ValueError, match="has no prompts"):
        prompts.file_prompts(storage.join(root, "empty.txt"))
