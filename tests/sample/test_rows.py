"""Prompt files: .txt / .jsonl / .csv rows, per-row options, validation and job sharding."""

import json
import os

import pytest

from lumiere_jax.sample import rows as rows_lib


def write(path, text):
    path.write_text(text)
    return os.fspath(path)


def test_text_file_skips_blank_lines_and_numbers_rows(tmp_path):
    rows = rows_lib.read_rows(write(tmp_path / "p.txt", "a cat\n\n  a dog  \n"))
    assert [(row.index, row.id, row.prompt, row.mode) for row in rows] == [
        (0, "000000", "a cat", "t2v"), (1, "000001", "a dog", "t2v")]


def test_jsonl_options_and_relative_paths(tmp_path):
    lines = [{"prompt": "p", "mode": "i2v", "image": "img.png", "seed": 5, "guidance_weight": 2, "num_steps": 3},
             {"prompt": "q", "id": "edit-1", "mode": "sdedit", "video": "/abs/v.mp4", "strength": 0.4},
             {"prompt": "r", "mode": "cinemagraph", "image": "i.png", "box": [0.1, 0.2, 0.5, 0.9]}]
    path = write(tmp_path / "p.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n")
    first, second, third = rows_lib.read_rows(path)
    assert first.image == os.path.join(tmp_path, "img.png") and first.seed == 5
    assert first.guidance_weight == 2.0 and first.num_steps == 3
    assert second.id == "edit-1" and second.video == "/abs/v.mp4" and second.strength == 0.4
    assert third.box == (0.1, 0.2, 0.5, 0.9)


def test_csv_empty_cells_are_unset(tmp_path):
    path = write(tmp_path / "p.csv", "prompt,mode,video,mask,seed\nfill it,inpaint,v.mp4,m.png,\nplain,,,,3\n")
    first, second = rows_lib.read_rows(path)
    assert first.mode == "inpaint" and first.mask == os.path.join(tmp_path, "m.png") and first.seed is None
    assert second.mode == "t2v" and second.seed == 3


@pytest.mark.parametrize("line, message", [
    ({"prompt": "x", "mode": "zoom"}, "unknown mode"),
    ({"prompt": "x", "mode": "i2v"}, "needs a 'image' path"),
    ({"prompt": "x", "mode": "inpaint", "video": "v.mp4"}, "exactly one of 'mask'"),
    ({"prompt": "x", "mode": "sdedit", "video": "v.mp4", "strength": 1.5}, "strength"),
    ({"prompt": "x", "colour": "red"}, "unknown fields"),
    ({"prompt": "x", "box": "0.5,0,0.2,1", "mode": "cinemagraph", "image": "i.png"}, "top < bottom"),
    ({"prompt": "x", "id": "a/b"}, "may contain only"),
    ({"prompt": "x", "seed": "many"}, "not a valid int"),
    ({"mode": "t2v"}, "needs a string 'prompt'"),
])
def test_bad_rows_are_named(tmp_path, line, message):
    path = write(tmp_path / "p.jsonl", json.dumps(line) + "\n")
    with pytest.raises(rows_lib.RowError, match=message) as error:
        rows_lib.read_rows(path)
    assert "p.jsonl:1" in str(error.value)


def test_duplicate_ids_and_unknown_extension(tmp_path):
    with pytest.raises(rows_lib.RowError, match="more than once"):
        rows_lib.read_rows(write(tmp_path / "p.jsonl", '{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}\n'))
    with pytest.raises(rows_lib.RowError, match="extension"):
        rows_lib.read_rows(write(tmp_path / "p.yaml", "a"))


def test_shards_partition_rows_and_keep_indices(tmp_path):
    rows = rows_lib.read_rows(write(tmp_path / "p.txt", "\n".join(f"prompt {i}" for i in range(7))))
    shards = [rows_lib.shard_rows(rows, shard, 3) for shard in range(3)]
    assert sorted(row.index for shard in shards for row in shard) == list(range(7))
    assert [row.index for row in shards[1]] == [1, 4]
    with pytest.raises(ValueError, match="shard_id"):
        rows_lib.shard_rows(rows, 3, 3)
