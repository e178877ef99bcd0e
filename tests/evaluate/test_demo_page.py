"""The demo's results page on a fake demo folder: every link resolves beside the page, every prompt is shown, the
loss plot has one vertex per logged step, and a missing contact sheet is listed instead of linked."""

import html.parser
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from lumiere_jax.data import video_io
from lumiere_jax.evaluate import demo_page

LOGGED_STEPS = (5, 10, 15, 20, 25)


class PageParser(html.parser.HTMLParser):
    """Collects img src / a href, polyline points, the body's attributes and the text."""

    def __init__(self):
        super().__init__()
        self.links, self.polylines, self.body, self.text = [], [], {}, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.links.append(attrs["src"])
        elif tag == "a":
            self.links.append(attrs["href"])
        elif tag == "polyline":
            self.polylines.append(attrs["points"].split())
        elif tag == "body":
            self.body = attrs

    def handle_data(self, data):
        self.text.append(data)


def write_clip(folder, clip_id, prompt, mode, row_extra=None):
    """A sampling job's row files (sample/outputs.py): mp4 + gif of a tiny moving square, then its sidecar."""
    frames = np.zeros((4, 16, 16, 3), np.uint8)
    for index in range(4):
        frames[index, 4:8, 2 + 2 * index:6 + 2 * index] = 255
    os.makedirs(folder, exist_ok=True)
    video_io.write_mp4(os.path.join(folder, f"{clip_id}.mp4"), frames, 8.0)
    video_io.write_gif(os.path.join(folder, f"{clip_id}.gif"), frames, 8.0)
    sidecar = {"id": clip_id, "prompt": prompt, "mode": mode, "row": {"prompt": prompt, **(row_extra or {})},
               "files": {"mp4": f"{clip_id}.mp4", "gif": f"{clip_id}.gif"}}
    with open(os.path.join(folder, f"{clip_id}.json"), "w") as file:
        json.dump(sidecar, file)


@pytest.fixture
def demo_dir(tmp_path):
    """A demo out_dir: base and SSR text-to-video clips, an i2v clip with its given image, a contact sheet, and one
    stage's TensorBoard events."""
    image = tmp_path / "condition_image.png"
    tf.io.write_file(str(image), tf.io.encode_png(np.full((16, 16, 3), 90, np.uint8)))
    for folder in ("videos_base", "videos"):
        write_clip(tmp_path / folder, "t2v_0", "a red circle moving quickly to the right on a blue background", "t2v")
    write_clip(tmp_path / "videos", "i2v_0", "a green square <moving> & right", "i2v", {"image": str(image)})
    tf.io.write_file(str(tmp_path / demo_page.CONTACT_SHEET_NAME), tf.io.encode_png(np.zeros((64, 512, 3), np.uint8)))
    with tf.summary.create_file_writer(str(tmp_path / "runs" / "t2i")).as_default():
        for step in LOGGED_STEPS:
            tf.summary.scalar(demo_page.LOSS_TAG, 1.0 / step, step=step)
            tf.summary.scalar("train/learning_rate", 1e-4, step=step)
    return tmp_path


def page_of(demo_dir):
    folders = [demo_page.VideoFolder("videos_base", "base", {"t2v_0": {"shape": 1.0, "speed": None}}),
               demo_page.VideoFolder(str(demo_dir / "videos"), "base + SSR", {"i2v": {"first_frame_mae": 0.02}})]
    path = demo_page.write_page(str(demo_dir), folders, {"t2i": "runs/t2i", "ssr": str(demo_dir / "runs" / "ssr")})
    parser = PageParser()
    with open(path) as file:
        parser.feed(file.read())
    return path, parser


def test_page_links_resolve_and_show_prompts_scores_and_losses(demo_dir):
    path, parser = page_of(demo_dir)
    assert path == str(demo_dir / "index.html")
    assert len(parser.links) == 8  # 3 gifs, each in a link to its mp4; the given image; the sheet (no quality.json)
    for link in parser.links:
        assert not os.path.isabs(link) and "://" not in link, link
        assert (demo_dir / link).is_file(), link
    assert {"videos_base/t2v_0.gif", "videos/t2v_0.gif", "videos/i2v_0.gif", "condition_image.png",
            "contact_sheet.png"} <= set(parser.links)
    text = "".join(parser.text)
    assert "a red circle moving quickly to the right on a blue background" in text
    assert "a green square <moving> & right" in text  # escaped in the file, read back as written
    assert "first_frame_mae" in text and "0.020" in text and "n/a" in text
    (points,) = parser.polylines
    assert len(points) == len(LOGGED_STEPS)
    assert "ssr: no train/loss in runs/ssr/ (TensorBoard events)" in text
    assert parser.body["data-status"] == "loading"  # the inline script sets ok / error once images settle


def test_loss_curve_reads_the_logged_steps(demo_dir):
    curve = demo_page.read_loss_curve(str(demo_dir / "runs" / "t2i"), "t2i")
    assert curve.steps == LOGGED_STEPS
    assert curve.losses == pytest.approx([1.0 / step for step in LOGGED_STEPS])
    assert demo_page.read_loss_curve(str(demo_dir / "runs" / "t2i"), "t2i", tag="train/missing") is None


def test_missing_contact_sheet_is_listed_not_linked(demo_dir):
    os.remove(demo_dir / demo_page.CONTACT_SHEET_NAME)
    _, parser = page_of(demo_dir)
    assert demo_page.CONTACT_SHEET_NAME not in parser.links
    assert f"{demo_page.CONTACT_SHEET_NAME}: not found" in "".join(parser.text)
    for link in parser.links:
        assert (demo_dir / link).is_file(), link


def test_summary_tables_show_each_value_beside_its_columns(demo_dir):
    table = demo_page.ScoreTable("Quality of 16 clips", ("all prompts", "chance", "ground truth"),
                                 {"object_color": (0.5625, 0.125, 1.0), "speed": (None, 0.5, 0.6875)})
    folders = [demo_page.VideoFolder("videos_base", "base")]
    path = demo_page.write_page(str(demo_dir), folders, {}, tables=[table])
    with open(path) as file:
        html_text = file.read()
    summary = html_text.split('<table class="summary">', 1)[1].split("</table>", 1)[0]
    rows = [row for row in summary.split("<tr>") if row]
    cells = [[cell.split("<", 1)[0] for cell in row.replace("<th>", "<td>").split("<td>")[1:]] for row in rows]
    assert cells == [["", "all prompts", "chance", "ground truth"], ["object_color", "0.562", "0.125", "1.000"],
                     ["speed", "n/a", "0.500", "0.688"]]
    assert html_text.index("Quality of 16 clips") < html_text.index("<h2>Clips</h2>")
