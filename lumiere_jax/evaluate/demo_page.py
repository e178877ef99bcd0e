"""The demo's results page: `index.html` in the demo's out_dir, beside the videos it shows.

It shows the summary score tables (e.g. each metric beside its chance level and the ground truth's score), every
generated clip as an animated GIF with its prompt, mode and scores, the contact sheet, and each
training stage's loss (`train/loss` in the TensorBoard event files of runs/<stage>/, train/loop.py) as a small
inline SVG plot. It links only files under its own folder, by relative paths, and loads nothing else, so it
works offline and can be moved with the folder. What it expected but did not find is listed on the page.
A short inline script sets `data-status` on <body> to "ok" once every image has loaded and to "error" when one
fails, for a headless browser to check (.ci/check_page.sh).
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import urllib.parse
from collections.abc import Mapping, Sequence

from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.util import tensor_util

PAGE_NAME = "index.html"
CONTACT_SHEET_NAME = "contact_sheet.png"
QUALITY_NAME = "quality.json"
LOSS_TAG = "train/loss"  # train/loop.py writes `train/<name>` scalars to MODEL_DIR


@dataclasses.dataclass(frozen=True)
class VideoFolder:
    """A sampling job's OUTPUT_DIR shown on the page (absolute, or relative to the page's folder).

    scores: per clip, {metric: value}, looked up by the clip's id and then by its mode.
    """

    path: str
    label: str
    scores: Mapping[str, Mapping[str, float | None]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ScoreTable:
    """A summary table: one row per name, one value per column (None: not applicable)."""

    title: str
    columns: tuple[str, ...]
    rows: Mapping[str, Sequence[float | None]]


@dataclasses.dataclass(frozen=True)
class View:
    """One folder's rendering of a clip: GIF and mp4 paths relative to the page (None when absent), scores."""

    label: str
    gif: str | None
    mp4: str | None
    scores: Mapping[str, float | None]


@dataclasses.dataclass(frozen=True)
class Clip:
    """A prompt-file row and its views, one per folder that holds it; the given image of conditional rows."""

    id: str
    prompt: str
    mode: str
    given_image: str | None
    views: tuple[View, ...]


@dataclasses.dataclass(frozen=True)
class LossCurve:
    """A stage's finite `train/loss` values by step, in step order."""

    stage: str
    steps: tuple[int, ...]
    losses: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Page:
    clips: tuple[Clip, ...]
    contact_sheet: str | None
    quality: str | None
    curves: tuple[LossCurve, ...]
    missing: tuple[str, ...]
    tables: tuple[ScoreTable, ...] = ()


def _relative(page_dir: str, path: str) -> str | None:
    """`path` relative to the page, if it exists under the page's folder; else None."""
    absolute = os.path.join(page_dir, path)
    relative = os.path.relpath(absolute, page_dir)
    if not os.path.isfile(absolute) or relative.startswith(os.pardir):
        return None
    return relative.replace(os.sep, "/")


def read_sidecars(folder: str) -> list[dict]:
    """The sampling job's row sidecars in `folder` (sample/outputs.py: JSON with `files`), sorted by id."""
    sidecars = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(folder, name)) as file:
            content = json.load(file)
        if isinstance(content, dict) and "mp4" in content.get("files", {}):
            sidecars.append(content)
    return sidecars


def collect_clips(page_dir: str, folders: Sequence[VideoFolder]) -> tuple[list[Clip], list[str]]:
    """Clips of every folder, grouped by row id in first-seen order; and what was missing."""
    views: dict[str, list[View]] = {}
    rows: dict[str, dict] = {}
    missing = []
    for folder in folders:
        directory = os.path.join(page_dir, folder.path)
        shown = os.path.relpath(directory, page_dir)
        if not os.path.isdir(directory):
            missing.append(f"{shown}/: folder not found")
            continue
        sidecars = read_sidecars(directory)
        if not sidecars:
            missing.append(f"{shown}/: no clips (no sidecar JSON naming an mp4)")
        for sidecar in sidecars:
            files = {kind: os.path.join(directory, name) for kind, name in sidecar["files"].items()}
            gif = _relative(page_dir, files["gif"]) if "gif" in files else None
            if gif is None:
                missing.append(f"{shown}/{sidecar['id']}: no GIF (sample with sample_videos.write_gif=True)")
            scores = folder.scores.get(sidecar["id"], folder.scores.get(sidecar["mode"], {}))
            views.setdefault(sidecar["id"], []).append(
                View(folder.label, gif, _relative(page_dir, files["mp4"]), dict(scores)))
            rows.setdefault(sidecar["id"], sidecar)
    clips = []
    for clip_id, sidecar in rows.items():
        image = sidecar.get("row", {}).get("image")
        clips.append(Clip(clip_id, sidecar["prompt"], sidecar["mode"], image and _relative(page_dir, image),
                          tuple(views[clip_id])))
    return clips, missing


def read_loss_curve(run_dir: str, stage: str, tag: str = LOSS_TAG) -> LossCurve | None:
    """`tag` from the TensorBoard event files in `run_dir`; None when there is none.

    The plugin accumulator reads scalars written as tensors (TF2 / clu) and as simple values alike, and drops
    events orphaned by a restart; a step logged twice keeps its last value.
    """
    accumulator = plugin_event_accumulator.EventAccumulator(
        run_dir, size_guidance={plugin_event_accumulator.TENSORS: 0})
    accumulator.Reload()
    if tag not in accumulator.Tags()[plugin_event_accumulator.TENSORS]:
        return None
    by_step = {event.step: float(tensor_util.make_ndarray(event.tensor_proto)) for event in accumulator.Tensors(tag)}
    points = sorted((step, loss) for step, loss in by_step.items() if math.isfinite(loss))
    if not points:
        return None
    steps, losses = zip(*points)
    return LossCurve(stage, tuple(steps), tuple(losses))


def collect(page_dir: str, folders: Sequence[VideoFolder], runs: Mapping[str, str]) -> Page:
    """Everything the page shows. runs: {stage name: run directory (absolute, or relative to the page)}."""
    clips, missing = collect_clips(page_dir, folders)
    contact_sheet = _relative(page_dir, CONTACT_SHEET_NAME)
    if contact_sheet is None:
        missing.append(f"{CONTACT_SHEET_NAME}: not found")
    curves = []
    for stage, run_dir in runs.items():
        run_dir = os.path.join(page_dir, run_dir)
        curve = read_loss_curve(run_dir, stage) if os.path.isdir(run_dir) else None
        if curve is None:
            missing.append(f"{stage}: no {LOSS_TAG} in {os.path.relpath(run_dir, page_dir)}/ (TensorBoard events)")
        else:
            curves.append(curve)
    return Page(tuple(clips), contact_sheet, _relative(page_dir, QUALITY_NAME), tuple(curves), tuple(missing))


PLOT_WIDTH, PLOT_HEIGHT = 260, 130
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 48, 250, 10, 105  # the plotting area inside the SVG


def loss_plot_svg(curve: LossCurve) -> str:
    """A small SVG line plot of the loss against the step: one polyline vertex per logged step."""
    def scale(value, low, high, start, end):
        return (start + end) / 2 if high == low else start + (value - low) / (high - low) * (end - start)

    first, last = curve.steps[0], curve.steps[-1]
    low, high = min(curve.losses), max(curve.losses)
    points = " ".join(f"{scale(step, first, last, PLOT_LEFT, PLOT_RIGHT):.1f},"
                      f"{scale(loss, low, high, PLOT_BOTTOM, PLOT_TOP):.1f}"
                      for step, loss in zip(curve.steps, curve.losses))
    labels = [(PLOT_LEFT - 4, PLOT_TOP + 4, "end", f"{high:.4g}"), (PLOT_LEFT - 4, PLOT_BOTTOM, "end", f"{low:.4g}"),
              (PLOT_LEFT, PLOT_BOTTOM + 16, "start", f"step {first}"), (PLOT_RIGHT, PLOT_BOTTOM + 16, "end", f"{last}")]
    texts = "".join(f'<text x="{x}" y="{y}" text-anchor="{anchor}">{html.escape(text)}</text>'
                    for x, y, anchor, text in labels)
    return (f'<svg class="loss" width="{PLOT_WIDTH}" height="{PLOT_HEIGHT}" viewBox="0 0 {PLOT_WIDTH} {PLOT_HEIGHT}" '
            f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{html.escape(curve.stage)} {LOSS_TAG}">'
            f'<rect x="{PLOT_LEFT}" y="{PLOT_TOP}" width="{PLOT_RIGHT - PLOT_LEFT}" '
            f'height="{PLOT_BOTTOM - PLOT_TOP}" class="frame"/>{texts}'
            f'<polyline points="{points}"/></svg>')


STYLE = """
body { font: 14px sans-serif; margin: 1.5em; color: #222; }
.clips, .curves { display: flex; flex-wrap: wrap; gap: 1em; }
.clip, .curve { border: 1px solid #ccc; border-radius: 4px; padding: 0.6em; }
.clip { max-width: 46em; }
.views { display: flex; flex-wrap: wrap; gap: 0.8em; align-items: flex-start; }
figure { margin: 0; }
figure img { width: 128px; height: 128px; image-rendering: pixelated; display: block; }
figcaption { font-size: 12px; color: #555; max-width: 260px; }
.views figcaption { max-width: 160px; }
.mode { background: #eee; border-radius: 3px; padding: 0 0.4em; font-weight: normal; font-size: 12px; }
table.scores { font-size: 12px; border-collapse: collapse; }
table.scores td { padding: 0 0.4em 0 0; }
table.summary { border-collapse: collapse; }
table.summary td, table.summary th { padding: 0.1em 0.8em 0.1em 0; text-align: right; }
table.summary td:first-child { text-align: left; }
img.sheet { image-rendering: pixelated; max-width: 100%; }
svg.loss text { font-size: 10px; fill: #555; }
svg.loss rect.frame { fill: none; stroke: #ccc; }
svg.loss polyline { fill: none; stroke: #1565c0; stroke-width: 1.5; }
.missing { color: #a00; }
"""

# Runs at the end of <body>; `load` fires once every image has loaded or failed.
STATUS_SCRIPT = """
function markFailed() { document.body.dataset.status = "error"; }
for (const image of document.images) {
  image.addEventListener("error", markFailed);
  if (image.complete && image.naturalWidth === 0) markFailed();
}
window.addEventListener("load", function () {
  const broken = Array.from(document.images).some(image => image.naturalWidth === 0);
  if (document.body.dataset.status !== "error") document.body.dataset.status = broken ? "error" : "ok";
});
"""


def _url(path: str) -> str:
    return html.escape(urllib.parse.quote(path))


def _scores_table(scores: Mapping[str, float | None]) -> str:
    if not scores:
        return ""
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{_format(value)}</td></tr>" for name, value in scores.items())
    return f'<table class="scores">{rows}</table>'


def _format(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _summary_html(table: ScoreTable) -> str:
    head = "".join(f"<th>{html.escape(column)}</th>" for column in ("", *table.columns))
    rows = "".join(f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{_format(value)}</td>" for value in values)
                   + "</tr>" for name, values in table.rows.items())
    return f'<h2>{html.escape(table.title)}</h2><table class="summary"><tr>{head}</tr>{rows}</table>'


def _view_html(clip: Clip, view: View) -> str:
    alt = html.escape(f"{clip.id}, {view.label}")
    media = f'<img src="{_url(view.gif)}" alt="{alt}">' if view.gif else "<p>no GIF</p>"
    if view.mp4:
        media = f'<a href="{_url(view.mp4)}">{media}</a>'
    return f"<figure>{media}<figcaption>{html.escape(view.label)}</figcaption>{_scores_table(view.scores)}</figure>"


def _clip_html(clip: Clip) -> str:
    figures = [_view_html(clip, view) for view in clip.views]
    if clip.given_image:
        figures.insert(0, f'<figure><img src="{_url(clip.given_image)}" alt="{html.escape(clip.id)}, given image">'
                          f"<figcaption>given image</figcaption></figure>")
    return (f'<section class="clip"><h3>{html.escape(clip.id)} <span class="mode">{html.escape(clip.mode)}</span>'
            f'</h3><p class="prompt">{html.escape(clip.prompt)}</p><div class="views">{"".join(figures)}</div>'
            f"</section>")


def _curve_html(curve: LossCurve) -> str:
    caption = (f"{curve.stage}: {LOSS_TAG} at {len(curve.steps)} steps, last {curve.losses[-1]:.4g} "
               f"(step {curve.steps[-1]})")
    return f'<figure class="curve">{loss_plot_svg(curve)}<figcaption>{html.escape(caption)}</figcaption></figure>'


def render(page: Page, title: str = "Lumiere demo") -> str:
    """The page's HTML: one self-contained document, every link relative."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if page.quality:
        parts.append(f'<p>Scores in full: <a href="{_url(page.quality)}">{html.escape(page.quality)}</a>. '
                     "Each animation links to its mp4.</p>")
    parts += [_summary_html(table) for table in page.tables]
    if page.missing:
        items = "".join(f"<li>{html.escape(item)}</li>" for item in page.missing)
        parts.append(f'<section class="missing"><h2>Not found</h2><ul>{items}</ul></section>')
    parts.append(f'<h2>Clips</h2><div class="clips">{"".join(_clip_html(clip) for clip in page.clips)}</div>')
    if page.contact_sheet:
        parts.append(f'<h2>Contact sheet</h2><img class="sheet" src="{_url(page.contact_sheet)}" '
                     f'alt="contact sheet: a row of frames per video">')
    parts.append(f'<h2>Training loss</h2><div class="curves">{"".join(map(_curve_html, page.curves))}</div>')
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<style>{STYLE}</style></head>\n<body data-status="loading">\n' + "\n".join(parts) +
            f"\n<script>{STATUS_SCRIPT}</script>\n</body></html>\n")


def write_page(page_dir: str, folders: Sequence[VideoFolder], runs: Mapping[str, str],
               title: str = "Lumiere demo", tables: Sequence[ScoreTable] = ()) -> str:
    """Collects and renders the page (with the summary `tables` on top) into `page_dir/index.html`; returns its
    path."""
    path = os.path.join(page_dir, PAGE_NAME)
    page = dataclasses.replace(collect(page_dir, folders, runs), tables=tuple(tables))
    with open(path, "w") as file:
        file.write(render(page, title))
    return path
