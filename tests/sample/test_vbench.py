"""VBench layout: converting VBench prompt lists into prompt files, and the sampling job writing VBench's file
names (`videos/{prompt}-{index}.mp4`, prompts.txt) on the tiny models, locally and on gs://, with resumption."""

import json
import os
import re

import av
import pytest

from lumiere_jax import storage
from lumiere_jax.sample import cli
from lumiere_jax.sample import outputs
from lumiere_jax.sample import rows as rows_lib
from lumiere_jax.sample import vbench
from tiny_setup import NUM_FRAMES, SIZE, sample_argv, write_gin

FPS = 8  # sample/cpu_tiny.gin
FULL_INFO = [
    {"prompt_en": "In a still frame, a stop sign", "dimension": ["temporal_flickering"]},
    {"prompt_en": "a bird and a cat", "dimension": ["multiple_objects"],
     "auxiliary_info": {"multiple_objects": {"object": "bird and cat"}}},
    {"prompt_en": "A beautiful coastal beach in spring, waves lapping on sand by Hokusai, in the style of Ukiyo ",
     "dimension": ["appearance_style", "overall_consistency"]},
    {"prompt_en": "a tranquil tableau of a caf\u00e9's fa\u00e7ade", "dimension": ["temporal_flickering", "scene"]},
    {"prompt_en": "a bird and a cat", "dimension": ["overall_consistency"]},
]


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return os.fspath(path)


def test_text_list_rows_are_stripped_unique_and_numbered(tmp_path):
    source = write(tmp_path / "all_dimension.txt", "a red car \n\nA 3D model of a 1800s victorian house.\na red car\n")
    output = os.fspath(tmp_path / "vbench.jsonl")
    assert vbench.main(["--input", source, "--output", output, "--samples_per_prompt", "3", "--seed", "7"]) == 0
    rows = rows_lib.read_rows(output)  # a valid prompt file
    prompts = ["a red car", "A 3D model of a 1800s victorian house."]
    assert [row.prompt for row in rows] == [prompt for prompt in prompts for _ in range(3)]
    assert len({row.id for row in rows}) == 6 and all(re.fullmatch(r"vb-[0-9a-f]{10}-[0-2]", row.id) for row in rows)
    assert [row.id[-1] for row in rows] == list("012012")
    assert [row.seed for row in rows] == [vbench.row_seed(row.prompt, int(row.id[-1]), 7) for row in rows]
    assert len({row.seed for row in rows}) == 6
    with pytest.raises(ValueError, match="needs the VBench_full_info.json"):
        vbench.prompt_rows(vbench.read_prompts(source), dimensions=["color"])


def test_full_info_rows_follow_dimensions_and_keep_their_seeds(tmp_path):
    source = write(tmp_path / "VBench_full_info.json", json.dumps(FULL_INFO))
    everything = vbench.prompt_rows(vbench.read_prompts(source), samples_per_prompt=2, temporal_flickering_samples=4)
    counts = {prompt: sum(row["prompt"] == prompt for row in everything) for prompt in dict.fromkeys(
        row["prompt"] for row in everything)}
    assert counts == {"In a still frame, a stop sign": 4, "a bird and a cat": 2,
                      "A beautiful coastal beach in spring, waves lapping on sand by Hokusai, in the style of Ukiyo": 2,
                      "a tranquil tableau of a caf\u00e9's fa\u00e7ade": 4}
    scene = vbench.prompt_rows(vbench.read_prompts(source), 2, 4, dimensions=["scene", "overall_consistency"])
    assert [row["prompt"] for row in scene] == ["a bird and a cat"] * 2 + [
        "A beautiful coastal beach in spring, waves lapping on sand by Hokusai, in the style of Ukiyo"] * 2 + [
        "a tranquil tableau of a caf\u00e9's fa\u00e7ade"] * 2  # temporal_flickering not converted: 2 samples
    by_id = {row["id"]: row for row in everything}
    assert all(by_id[row["id"]] == row for row in scene)  # same id and seed whichever dimensions are converted
    with pytest.raises(ValueError, match=r"\['colour'\] are not in the prompt list"):
        vbench.prompt_rows(vbench.read_prompts(source), dimensions=["colour"])


def test_prompts_that_cannot_be_file_names_are_refused(tmp_path, capsys):
    source = write(tmp_path / "bad.txt", "a cat\nAC/DC on stage\n" + "x" * 260 + "\n")
    assert vbench.main(["--input", source, "--output", os.fspath(tmp_path / "out.jsonl")]) == 2
    error = capsys.readouterr().err
    assert "'AC/DC on stage' contains '/'" in error and "makes a 266-byte file name" in error
    assert not os.path.exists(tmp_path / "out.jsonl")
    rows = rows_lib.read_rows(write(tmp_path / "rows.jsonl", "".join(
        json.dumps({"prompt": prompt, "id": name}) + "\n" for prompt, name in
        [("a cat", "a"), ("a dog", "b"), ("a cat", "c"), (" a cat", "d"), ("AC/DC", "e")])))
    with pytest.raises(ValueError, match=r"rows.jsonl: .*row 3 \(id 'd'\).*white space.*row 4 \(id 'e'\).*'/'.*"
                                         r"layout='default'"):
        vbench.video_paths(rows, os.fspath(tmp_path / "rows.jsonl"))
    paths = vbench.video_paths(rows[:3], "rows.jsonl")
    assert paths == {0: "videos/a cat-0.mp4", 1: "videos/a dog-0.mp4", 2: "videos/a cat-1.mp4"}
    assert vbench.prompt_list(rows[:3]) == "a cat\na dog\n"


def test_a_sidecar_of_another_layout_is_not_finished(tmp_path):
    row = rows_lib.Row(index=0, prompt="a cat", id="vb-1")
    default, layout = outputs.Layout(), outputs.make_layout("vbench", [row], "p.jsonl")
    (tmp_path / "vb-1.json").write_text(json.dumps({"prompt": "a cat", "mode": "t2v", "files": {"mp4": "vb-1.mp4"}}))
    (tmp_path / "vb-1.mp4").write_text("")
    assert outputs.is_finished(os.fspath(tmp_path), row, outputs.listed_names(os.fspath(tmp_path), default), default)
    assert not outputs.is_finished(os.fspath(tmp_path), row, outputs.listed_names(os.fspath(tmp_path), layout), layout)
    with pytest.raises(ValueError, match="layout='vbench!' is unknown"):
        outputs.make_layout("vbench!", [row], "p.jsonl")


def decode(path):
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return len(frames), frames[0].shape, float(stream.average_rate)


def test_job_writes_vbench_names_and_resumes(tmp_path, tiny_models):
    source = write(tmp_path / "list.txt", "a red circle moving right\na tranquil tableau of a caf\u00e9's fa\u00e7ade, "
                                          "in the style of Ukiyo\n")
    prompts = os.fspath(tmp_path / "vbench.jsonl")
    vbench.convert(source, prompts, samples_per_prompt=2)
    output_dir = os.fspath(tmp_path / "out")
    argv = sample_argv(write_gin(os.fspath(tmp_path / "tiny.gin")), prompts, output_dir, tiny_models,
                       "--gin.OutputConfig.layout=vbench", "--gin.ModelsConfig.use_ssr=False")
    assert cli.main(argv) == 0
    names = [f"{prompt}-{sample}.mp4" for prompt in ("a red circle moving right",
                                                      "a tranquil tableau of a caf\u00e9's fa\u00e7ade, in the style "
                                                      "of Ukiyo") for sample in range(2)]
    videos = os.path.join(output_dir, "videos")
    assert sorted(os.listdir(videos)) == sorted(names)
    for name in names:
        assert decode(os.path.join(videos, name)) == (NUM_FRAMES, (SIZE, SIZE, 3), FPS)
    with open(os.path.join(output_dir, "prompts.txt"), encoding="utf-8") as file:
        assert file.read().splitlines() == [name[:-6] for name in names[::2]]
    for row in rows_lib.read_rows(prompts):
        with open(os.path.join(output_dir, f"{row.id}.json")) as file:
            sidecar = json.load(file)
        assert sidecar["files"] == {"mp4": f"videos/{row.prompt}-{row.id[-1]}.mp4", "npy": f"{row.id}.npy"}
        assert sidecar["seed"] == row.seed and sidecar["layout"] == "vbench"
    finished = {name: os.stat(os.path.join(videos, name)).st_mtime_ns for name in names}
    os.remove(os.path.join(videos, names[1]))  # a lost video makes its row unfinished
    assert cli.main(argv) == 0
    with open(os.path.join(output_dir, "summary-0-of-1.json")) as file:
        summary = json.load(file)
    assert (summary["generated"], summary["skipped_finished"]) == (1, 3)
    assert sorted(os.listdir(videos)) == sorted(names)
    for name in (names[0], names[2], names[3]):
        assert os.stat(os.path.join(videos, name)).st_mtime_ns == finished[name]


def test_job_writes_vbench_names_to_a_bucket(tmp_path, tiny_models, gcs_emulator):
    prompts = ["a red circle moving right", "a tranquil tableau of a caf\u00e9's fa\u00e7ade, in the style of Ukiyo"]
    bucket = gcs_emulator.new_bucket()
    vbench.convert(write(tmp_path / "list.txt", "\n".join(prompts) + "\n"), f"{bucket}/vbench.jsonl",
                   samples_per_prompt=1)
    argv = sample_argv(write_gin(os.fspath(tmp_path / "tiny.gin")), f"{bucket}/vbench.jsonl", f"{bucket}/out",
                       tiny_models, "--gin.OutputConfig.layout=vbench", "--gin.ModelsConfig.use_ssr=False")
    assert cli.main(argv) == 0
    videos = sorted(name for name in gcs_emulator.objects(bucket, "out/videos/"))
    assert videos == sorted(f"out/videos/{prompt}-0.mp4" for prompt in prompts)
    assert storage.read_text(f"{bucket}/out/prompts.txt").splitlines() == prompts
    assert cli.main(argv) == 0
    assert storage.read_json(f"{bucket}/out/summary-0-of-1.json")["skipped_finished"] == 2
