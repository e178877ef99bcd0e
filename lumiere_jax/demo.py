"""The main job on the embedded default: the whole Lumiere pipeline at tiny size on `synthetic_motion`.

    python -m lumiere_jax.demo [--quick | --long] [--out_dir out/demo]

Runs, each stage through the same command line a user would type (visible progress throughout):
  1. pretrain the T2I U-Net on still frames          (runs/pretrain_t2i.gin)
  2. inflate it into a STUNet, train temporal layers (runs/train_stunet.gin; T2I layers frozen)
  3. pretrain a tiny image SR, 32x32 -> 64x64 frames (runs/pretrain_sr.gin), then inflate it into the SSR and
     train its temporal layers on 4-frame windows      (runs/train_ssr.gin; SR layers frozen)
  4. fine-tune the 7-channel conditional STUNet      (runs/finetune_conditional.gin)
  5. sample text-to-video, image-to-video and a cinemagraph, SSR fused over time by MultiDiffusion; the
     conditional clips keep the given content by known-content replacement (and once without, base only)
  6. write a contact sheet PNG and print the synthetic-domain quality score of the 16 text-to-video clips (prompts
     drawn with a fixed seed, half of them combinations the training split never shows; data/synthetic_prompts.py)
     beside each metric's chance level and the score of ground-truth renders of the same prompts (the ceiling),
     how well the image-to-video and cinemagraph clips keep the given image (first frame, static region), and
     whether the SSR, given ground-truth clips area-downsampled to the base size, comes closer to the full-size
     clips (PSNR) than bilinear upsampling of the same input (sample/upsample.py).
  7. write index.html beside them: the score tables, every clip animated with its prompt, mode and scores, the
     contact sheet, and each stage's training loss (evaluate/demo_page.py; works offline).
Everything is generated here (no downloads). Stages whose MODEL_DIR already holds the final checkpoint are
skipped by the trainer's resume logic, so an interrupted demo continues where it stopped. The training stages
run in two lanes side by side (1 -> 2 -> 4 beside 3), so one stage's single-threaded start-up and compilation
overlap with the other's compute on a few cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

from lumiere_jax.data import synthetic_prompts

# Tiny pipeline (our choice): base clips of 32x32 frames cut from the tiny dataset's 16-frame clips, SSR to
# 64x64 on 4-frame windows (trained on the `small` synthetic config, 64x64): runs/demo_sr.gin, sample/demo.gin.
BASE_SIZE, BASE_CLIP_FRAMES = 32, 16   # the `tiny` synthetic config the base windows are cut from
SSR_SIZE, SSR_CLIP_FRAMES = 64, 32     # the `small` config the SSR trains on
DEMO_DATASETS = ("tiny", "image_tiny", "small")  # the synthetic_motion configs the stages read
SCORED = synthetic_prompts.scored_combinations()
SSR_SHOWN_PROMPTS = 4  # text-to-video clips also sampled through the SSR (for the contact sheet and the page)
SSR_CHECK_CLIPS = 8    # ground-truth clips of the SSR-versus-bilinear check
GROUND_TRUTH_SEED = 1


@dataclasses.dataclass(frozen=True)
class DemoSteps:
    """Training steps per stage, sampler steps, the base clip length and the base model's schedule."""

    frames: int
    t2i: int
    stunet: int
    image_sr: int
    ssr: int
    conditional: int
    base_sampling: int
    ssr_sampling: int
    # gin bindings of the base model's diffusion schedule, given to the STUNet, the conditional fine-tune and the
    # sampling jobs (the SSR's schedule is scoped `ssr/` there and keeps its own); empty: the plain cosine.
    base_schedule: tuple[str, ...] = ()


# Sized for a 2-core CPU (aimed at 30 minutes with the install: 17-23 measured on a ~330 GFLOP/s AVX-512 host, 24-26 on
# a ~200 GFLOP/s one with the two training lanes, BENCHMARKS.md 6; the quick one a few minutes). The T2I stage gets most
# steps: its held-out loss is still falling at 2000 and text only starts to steer it after ~1500 (measured). The image
# SR is cheap per step (2-4 steps/s); with runs/demo_sr.gin's upsample-residual model, 750 steps put its samples above
# bilinear upsampling (400, with 20 SSR steps, did not: closer on 5 of 8 clips; BENCHMARKS.md 6). Its sampler takes 4
# steps: with this briefly trained model fewer steps come closer to the truth (32.3 dB at 8 steps, 33.0 at 4). The SSR's
# temporal layers and the conditional fine-tune get just enough steps to show the pipeline (the SSR check scores the
# same after 40 SSR steps as after 60: 33.9 dB). The STUNet's new layers start at zero (or as nearest-neighbour
# resampling) and train at twice cpu_tiny.gin's rate with temporal cross-attention to the text: at 600 steps that
# reaches a lower held-out loss than 600 without it or 300 at 5e-4 and scores as well or better in every column on the
# validation prompts; 450 steps keep the colour and consistency targets in less time (BENCHMARKS.md 6).
STUNET_LEARNING_RATE = 1e-3
FULL = DemoSteps(frames=8, t2i=2000, stunet=450, image_sr=750, ssr=40, conditional=60, base_sampling=32,
                 ssr_sampling=4)
QUICK = DemoSteps(frames=8, t2i=40, stunet=20, image_sr=10, ssr=10, conditional=10, base_sampling=6, ssr_sampling=3)
# The motion words take far longer (BENCHMARKS.md 6). On the cosine schedule shifted toward high noise by -log 8
# (`shifted_cosine` at 91 over 32 pixels: the 8 frames of a clip share one layout) the STUNet's sampled clips stay
# near chance in motion direction (0.125) for the first 10800 steps or more, then the motion words take hold; when
# depends on the run: 0.88 at 16200 steps in the first run (b2c879e), at 76b6bdb's code (another T2I, other float
# rounding) 0.31 at 16200, 0.50 at 20250 and 0.81 at 23625 and 24300, every other score at its target. `--long`
# trains it 24300 steps, by which both runs had met the target: ~3 h of STUNet training on these 2-core hosts.
SHIFTED_SCHEDULE = ("--gin.DiffusionConfig.schedule='shifted_cosine'",
                    "--gin.DiffusionConfig.schedule_kwargs={'resolution': 91, 'base_resolution': 32}")
LONG = dataclasses.replace(FULL, stunet=24300, base_schedule=SHIFTED_SCHEDULE)
PRESETS = {"full": FULL, "quick": QUICK, "long": LONG}


_RUNNING: set[subprocess.Popen] = set()  # the stage processes `run` is waiting on, in any lane
_RUNNING_LOCK = threading.Lock()
_STOPPING = threading.Event()  # set by `run_lanes` when a stage failed: the other lanes start no stage

Stage = tuple[list[str], str]  # (command, log name)


def run(command: list[str], log_name: str, out_dir: str) -> None:
    """Runs one stage, echoing its output and keeping a log; stops the demo on failure."""
    print(f"\n=== {log_name}: {' '.join(command)}", flush=True)
    start = time.perf_counter()
    log_path = os.path.join(out_dir, f"{log_name}.log")
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with _RUNNING_LOCK:
            _RUNNING.add(process)
            if _STOPPING.is_set():  # another lane failed while this stage was starting
                process.terminate()
        try:
            for line in process.stdout:
                log.write(line)
                if _is_progress(line):
                    print(f"  [{log_name}] {line.rstrip()}", flush=True)
            code = process.wait()
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(process)
    if code:
        raise SystemExit(f"stage {log_name} failed with exit code {code}; see {log_path}")
    print(f"=== {log_name} done in {time.perf_counter() - start:.0f} s", flush=True)


def run_lanes(lanes: list[list[Stage]], out_dir: str) -> None:
    """Runs each lane's stages in order and the lanes side by side (one thread each, a process per stage).

    The first stage that fails stops the stages running in the other lanes and ends the demo with its message.
    """
    errors: list[BaseException] = []
    _STOPPING.clear()

    def run_lane(stages: list[Stage]) -> None:
        try:
            for command, log_name in stages:
                if _STOPPING.is_set():
                    return
                run(command, log_name, out_dir)
        except BaseException as error:  # noqa: BLE001 -- SystemExit from `run` included: reported below
            with _RUNNING_LOCK:
                errors.append(error)
                _STOPPING.set()
                for process in _RUNNING:
                    process.terminate()

    threads = [threading.Thread(target=run_lane, args=(stages,), daemon=True) for stages in lanes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(str(errors[0]))


def _is_progress(line: str) -> bool:
    """Progress lines (steps/s and ETA, eval, sampling rate, summaries) and errors; the rest goes to the log."""
    keys = ("steps/s", "eval at", "rows/s", "ETA", "sampled", "summary", "dataset ready", "ERROR", "Error",
            "Traceback")
    return len(line) < 400 and any(key in line for key in keys)


def train_command(run_file: str, model_dir: str, steps: int, data_dir: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "lumiere_jax.train", f"--gin_file=runs/{run_file}", "--gin_file=runs/cpu_tiny.gin",
            f"--gin.MODEL_DIR={model_dir}", f"--gin.train.num_train_steps={steps}",
            f"--gin.SyntheticMotionConfig.data_dir={data_dir}",
            # cpu_tiny.gin saves and evaluates every 20 steps (for tests); a few times per stage is enough here.
            f"--gin.CheckpointConfig.save_every_steps={max(20, steps // 4)}",
            f"--gin.EvalConfig.every_steps={max(20, steps // 4)}", *extra]


def video_stage_bindings(frames: int, prefix: str = "") -> list[str]:
    """The base STUNet's clip length (the tiny preset builds for 8 frames) and its temporal cross-attention to
    the text (`TemporalConfig.text_cross_attention`: the demo's T2I learns from still frames whose captions have
    no motion words, so its frozen features cannot carry a direction; BENCHMARKS.md 6)."""
    overrides = f"{{'num_frames': {frames}, 'text_cross_attention': True}}"
    return [f"--gin_bindings={prefix}unet_adapter.temporal_overrides = {overrides}"]


def prepare_data_command(data_dir: str) -> list[str]:
    """Renders the synthetic_motion configs every stage reads (`runs/demo_sr.gin`'s list) into `data_dir`."""
    return [sys.executable, "-m", "lumiere_jax.data.synthetic_motion", f"--data_dir={data_dir}",
            f"--configs={','.join(DEMO_DATASETS)}"]


def write_condition_inputs(out_dir: str) -> dict[str, str]:
    """Renders a still synthetic frame (the i2v / cinemagraph image) and writes it as PNG."""
    import tensorflow as tf  # noqa: PLC0415 -- heavy; only needed here

    from lumiere_jax.data import synthetic_render  # noqa: PLC0415

    rng = np.random.default_rng(7)
    scene = synthetic_render.sample_scene(rng, num_frames=1, height=32, width=32, still=True)
    frame = synthetic_render.render(scene, 32, 32)[0]
    image_path = os.path.join(out_dir, "condition_image.png")
    tf.io.write_file(image_path, tf.io.encode_png(frame))
    return {"image": image_path, "caption": synthetic_render.caption(scene, include_motion=False)}


CINEMAGRAPH_BOX = (0.0, 0.0, 0.5, 1.0)  # (top, left, bottom, right): the top half animates
CONDITION_ERROR_LIMIT = 0.1  # mean absolute error (pixels in [-1, 1]) a kept frame or region should stay under


def clip_id(index: int) -> str:
    return f"t2v_{index:02d}"


def scored_prompt_rows() -> list[dict]:
    """The sampling job's rows of the scored text-to-video prompts: prompt i gets id `clip_id(i)` and seed i."""
    return [{"id": clip_id(index), "prompt": combination.caption(), "seed": index}
            for index, combination in enumerate(SCORED)]


def write_prompt_files(out_dir: str, condition: dict[str, str]) -> tuple[str, str, str]:
    """(all scored text-to-video rows, the first SSR_SHOWN_PROMPTS of them, the conditional rows) as JSONL."""
    text_rows = scored_prompt_rows()
    moving = condition["caption"].replace(" on a ", " moving quickly to the right on a ", 1)
    conditional_rows = [
        {"id": "i2v_0", "mode": "i2v", "prompt": moving, "image": condition["image"], "seed": 10},
        {"id": "cinemagraph_0", "mode": "cinemagraph", "prompt": condition["caption"], "image": condition["image"],
         "box": ",".join(str(value) for value in CINEMAGRAPH_BOX), "seed": 11},
    ]
    paths = []
    for name, rows in (("text_to_video", text_rows), ("text_to_video_ssr", text_rows[:SSR_SHOWN_PROMPTS]),
                       ("conditional", conditional_rows)):
        path = os.path.join(out_dir, f"{name}.jsonl")
        with open(path, "w") as file:
            file.writelines(json.dumps(row) + "\n" for row in rows)
        paths.append(path)
    return paths[0], paths[1], paths[2]


def sampling_flags(output_dir: str, prompts: str, stage: str, base_checkpoint: str, ssr_checkpoint: str,
                   steps: DemoSteps) -> list[str]:
    """The gin flags the demo's sampling commands share (base and SSR models, sampler steps)."""
    return ["--gin_file=sample/base.gin", "--gin_file=sample/ssr.gin", "--gin_file=sample/cpu_tiny.gin",
            f"--gin.OUTPUT_DIR={output_dir}", f"--gin.PROMPTS={prompts}", f"--gin.BASE_CHECKPOINT={base_checkpoint}",
            f"--gin.SSR_CHECKPOINT={ssr_checkpoint}", f"--gin.BASE_STAGE={stage}",
            f"--gin.SamplingConfig.num_steps={steps.base_sampling}",
            f"--gin.SamplingConfig.ssr_num_steps={steps.ssr_sampling}", "--gin_file=sample/demo.gin",
            *video_stage_bindings(steps.frames, "base/"), *steps.base_schedule]


def sample_command(prompts: str, output_dir: str, stage: str, base_checkpoint: str, ssr_checkpoint: str,
                   steps: DemoSteps, use_ssr: bool = True, replace_known: bool = False,
                   batch_size: int = 4) -> list[str]:
    return [sys.executable, "-m", "lumiere_jax.sample",
            *sampling_flags(output_dir, prompts, stage, base_checkpoint, ssr_checkpoint, steps),
            "--gin.OutputConfig.write_gif=True", "--gin.OutputConfig.save_arrays=True",
            f"--gin.sample_videos.batch_size={batch_size}", f"--gin.ModelsConfig.use_ssr={use_ssr}",
            f"--gin.SamplingConfig.replace_known={replace_known}"]


def contact_sheet(video_dirs: list[str], path: str, frames_per_row: int = 8) -> int:
    """One PNG: a row of evenly spaced frames per generated video (base and SSR), nearest-upscaled to 64."""
    import tensorflow as tf  # noqa: PLC0415

    from lumiere_jax.data import video_io  # noqa: PLC0415

    rows = []
    for directory in video_dirs:
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".mp4"):
                continue
            frames, _ = video_io.read_video(os.path.join(directory, name))
            picks = np.linspace(0, len(frames) - 1, frames_per_row).round().astype(int)
            scale = max(1, 64 // frames.shape[1])
            tiles = [np.repeat(np.repeat(frames[i], scale, 0), scale, 1)[:64, :64] for i in picks]
            rows.append(np.concatenate(tiles, axis=1))
    if not rows:
        raise SystemExit(f"no videos found in {video_dirs}")
    sheet = np.concatenate(rows, axis=0).astype(np.uint8)
    tf.io.write_file(path, tf.io.encode_png(sheet))
    return len(rows)


def ground_truth_clips(size: int, clip_frames: int, window: int, count: int) -> list[np.ndarray]:
    """Renders of the first `count` scored prompts as training shows them (uint8 `[window, size, size, 3]`)."""
    return [synthetic_prompts.render_window(combination, clip_frames, size, size, window,
                                            np.random.default_rng((GROUND_TRUTH_SEED, index)))
            for index, combination in enumerate(SCORED[:count])]


def quality_report(video_dir: str, frames: int) -> dict:
    """Synthetic-domain scores of the text-to-video clips in `video_dir`: over all clips and over the held-out
    prompts, each metric's chance level, and the scores of ground-truth renders of the same prompts."""
    from lumiere_jax.data import video_io  # noqa: PLC0415
    from lumiere_jax.evaluate import synthetic_quality  # noqa: PLC0415

    clip_ids, videos, prompts = [], [], []
    for index, combination in enumerate(SCORED):
        path = os.path.join(video_dir, clip_id(index) + ".mp4")
        if os.path.exists(path):
            clip_ids.append(clip_id(index))
            videos.append(video_io.read_video(path)[0])
            prompts.append(combination.caption())
    scores = synthetic_quality.score_videos(videos, prompts)
    held_out = [clip_id(index) for index, combination in enumerate(SCORED)
                if combination in synthetic_prompts.held_out_combinations()]
    truth = synthetic_quality.score_videos(ground_truth_clips(BASE_SIZE, BASE_CLIP_FRAMES, frames, len(SCORED)),
                                           [combination.caption() for combination in SCORED])
    return {"metrics": scores["metrics"], "chance": scores["chance"], "num_videos": scores["num_videos"],
            "metrics_held_out": synthetic_quality.mean_metrics(
                [detail for name, detail in zip(clip_ids, scores["videos"]) if name in held_out]),
            "ground_truth": truth["metrics"], "held_out_ids": held_out,
            "videos": {name: detail["scores"] for name, detail in zip(clip_ids, scores["videos"])}}


def ssr_check_command(inputs: str, output: str, out_dir: str, ssr_checkpoint: str, steps: DemoSteps) -> list[str]:
    """The SSR alone on given low-resolution clips (sample/upsample.py), with the sampling jobs' settings (the base
    stage's required flags are filled but unused: no base clip is sampled)."""
    return [sys.executable, "-m", "lumiere_jax.sample.upsample",
            *sampling_flags(out_dir, inputs, "stunet", ssr_checkpoint, ssr_checkpoint, steps),
            "--gin_file=sample/upsample.gin", f"--gin.upsample_clips.inputs={inputs}",
            f"--gin.upsample_clips.output={output}"]


def ssr_psnr_report(out_dir: str, ssr_checkpoint: str, steps: DemoSteps) -> dict:
    """PSNR against the full-size ground truth of the SSR and of bilinear upsampling, both given the same
    ground-truth clips area-downsampled to the base size (as the SSR's training inputs are made)."""
    from lumiere_jax.evaluate import upsampling  # noqa: PLC0415
    from lumiere_jax.sample import conditions  # noqa: PLC0415

    truth = [conditions.to_unit_range(clip)
             for clip in ground_truth_clips(SSR_SIZE, SSR_CLIP_FRAMES, steps.frames, SSR_CHECK_CLIPS)]
    low_res = upsampling.area_downsample(np.stack(truth), BASE_SIZE)  # [N, T, 32, 32, 3]
    inputs, output = os.path.join(out_dir, "ssr_check_inputs.npz"), os.path.join(out_dir, "ssr_check_outputs.npz")
    np.savez(inputs, low_res=low_res, prompts=np.array([c.caption() for c in SCORED[:SSR_CHECK_CLIPS]]))
    run(ssr_check_command(inputs, output, out_dir, ssr_checkpoint, steps), "7_ssr_check", out_dir)
    with np.load(output) as arrays:
        upsampled = arrays["video"]
    bilinear = upsampling.bilinear_upsample(low_res, SSR_SIZE)
    clips = {clip_id(index): {"ssr": upsampling.psnr(upsampled[index], truth[index]),
                              "bilinear": upsampling.psnr(bilinear[index], truth[index])}
             for index in range(SSR_CHECK_CLIPS)}
    return {"clips": clips, "mean": {name: float(np.mean([scores[name] for scores in clips.values()]))
                                     for name in ("ssr", "bilinear")},
            "ssr_closer": sum(scores["ssr"] > scores["bilinear"] for scores in clips.values())}


def condition_report(video_dir: str, image_path: str) -> dict[str, float]:
    """Errors of the conditional clips against the given image (evaluate/condition_fidelity.py): the first frame
    of the image-to-video and cinemagraph clips, and the cinemagraph's static region over all frames."""
    import tensorflow as tf  # noqa: PLC0415

    from lumiere_jax.evaluate import condition_fidelity  # noqa: PLC0415
    from lumiere_jax.sample import conditions  # noqa: PLC0415

    image = conditions.to_unit_range(tf.io.decode_png(tf.io.read_file(image_path), channels=3).numpy())
    clips = {row_id: conditions.to_unit_range(np.load(os.path.join(video_dir, f"{row_id}.npy")))
             for row_id in ("i2v_0", "cinemagraph_0")}
    region = conditions.box_region(CINEMAGRAPH_BOX, 1, *image.shape[:2])[0]  # [h, w, 1], the job's region
    return {
        "i2v_first_frame_mae": condition_fidelity.first_frame_error(clips["i2v_0"], image),
        "cinemagraph_first_frame_mae": condition_fidelity.first_frame_error(clips["cinemagraph_0"], image),
        "cinemagraph_static_region_mae": condition_fidelity.static_region_error(clips["cinemagraph_0"], image, region),
    }


def score_tables(report: dict) -> list:
    """The demo's summary: each text-to-video metric (all prompts, held-out prompts) beside its chance level and the
    ground truth's score, and the SSR-versus-bilinear PSNR per clip."""
    from lumiere_jax.evaluate import demo_page  # noqa: PLC0415

    metrics = report.get("metrics", {})
    columns = ("metrics_held_out", "chance", "ground_truth")
    quality = demo_page.ScoreTable(
        f"Synthetic-domain quality of the {report.get('num_videos', 0)} text-to-video clips "
        f"({len(report.get('held_out_ids', []))} prompts held out of training)",
        ("all prompts", "held-out", "chance", "ground truth"),
        {name: (value, *(report.get(column, {}).get(name) for column in columns)) for name, value in metrics.items()})
    ssr = report.get("ssr_psnr")
    if not ssr:
        return [quality]
    rows = {name: (scores["ssr"], scores["bilinear"]) for name, scores in ssr["clips"].items()}
    rows[f"mean (SSR closer on {ssr['ssr_closer']} of {len(ssr['clips'])})"] = (ssr["mean"]["ssr"],
                                                                                ssr["mean"]["bilinear"])
    return [quality, demo_page.ScoreTable(
        f"SSR versus bilinear upsampling of ground-truth clips area-downsampled to {BASE_SIZE}x{BASE_SIZE} "
        f"(PSNR in dB against the {SSR_SIZE}x{SSR_SIZE} truth; higher is closer)", ("SSR", "bilinear"), rows)]


def write_page(out_dir: str, report: dict, runs: dict[str, str], base_dir: str, video_dir: str,
               model_only_dir: str, title: str, tables: list) -> str:
    """index.html in out_dir (evaluate/demo_page.py): the clips with their scores, the contact sheet, the losses.

    Scores: the base text-to-video clips' own synthetic quality (by clip id), and the conditional clips' errors
    against the given image (by mode: condition_report's names start with the clip's mode).
    """
    from lumiere_jax.evaluate import demo_page  # noqa: PLC0415

    def by_mode(errors: dict[str, float]) -> dict[str, dict[str, float]]:
        return {mode: {name[len(mode) + 1:]: value for name, value in errors.items() if name.startswith(mode + "_")}
                for mode in ("i2v", "cinemagraph")}

    folders = [
        demo_page.VideoFolder(base_dir, "base (scored)", report.get("videos", {})),
        demo_page.VideoFolder(video_dir, "base + SSR", by_mode(report["conditioning"])),
        demo_page.VideoFolder(model_only_dir, "fine-tuned model alone (base, no replacement)",
                              by_mode(report["conditioning_model_only"])),
    ]
    return demo_page.write_page(out_dir, folders, runs, title, tables)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lumiere-demo", description=__doc__.split("\n\n")[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--quick", dest="preset", action="store_const", const="quick",
                        help="a few steps per stage (minutes, not a good model)")
    length.add_argument("--long", dest="preset", action="store_const", const="long",
                        help=f"the STUNet trained {LONG.stunet // FULL.stunet}x longer on a shifted schedule, until "
                             "its clips move as the prompt says (about 3 h 30 min on 2 cores)")
    parser.set_defaults(preset="full")
    parser.add_argument("--out_dir", default="out/demo", help="where runs, videos and reports go")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the console
    preset = args.preset
    steps = PRESETS[preset]
    out_dir = os.path.abspath(os.path.join(args.out_dir, preset))
    data_dir = os.path.abspath(os.path.join(args.out_dir, "tfds"))
    os.makedirs(out_dir, exist_ok=True)
    start = time.perf_counter()
    runs = {name: os.path.join(out_dir, "runs", name) for name in ("t2i", "stunet", "sr", "ssr", "conditional")}

    # Rendered before the lanes start: both lanes' first stages would otherwise build the tiny configs at once.
    run(prepare_data_command(data_dir), "0_prepare_data", out_dir)
    sr_data = ["--gin_file=runs/demo_sr.gin"]
    base_lane = [
        (train_command("pretrain_t2i.gin", runs["t2i"], steps.t2i, data_dir, []), "1_pretrain_t2i"),
        (train_command("train_stunet.gin", runs["stunet"], steps.stunet, data_dir,
                       [f"--gin.T2I_CHECKPOINT={runs['t2i']}", *video_stage_bindings(steps.frames),
                        f"--gin.OptimizerConfig.learning_rate={STUNET_LEARNING_RATE}", *steps.base_schedule]),
         "2_train_stunet"),
        (train_command("finetune_conditional.gin", runs["conditional"], steps.conditional, data_dir,
                       [f"--gin.STUNET_CHECKPOINT={runs['stunet']}", *video_stage_bindings(steps.frames),
                        *steps.base_schedule]),
         "4_finetune_conditional"),
    ]
    sr_lane = [
        (train_command("pretrain_sr.gin", runs["sr"], steps.image_sr, data_dir, sr_data), "3_pretrain_sr"),
        (train_command("train_ssr.gin", runs["ssr"], steps.ssr, data_dir,
                       [f"--gin.SR_CHECKPOINT={runs['sr']}", *sr_data]), "3_train_ssr"),
    ]
    run_lanes([base_lane, sr_lane], out_dir)

    condition = write_condition_inputs(out_dir)
    text_prompts, ssr_text_prompts, conditional_prompts = write_prompt_files(out_dir, condition)
    video_dir = os.path.join(out_dir, "videos")
    base_dir = os.path.join(out_dir, "videos_base")
    # The quality score reads the STUNet's own 32x32 output, all 16 clips in one batch; the SSR output of the first
    # few goes to the contact sheet and the page.
    run(sample_command(text_prompts, base_dir, "stunet", runs["stunet"], runs["ssr"], steps, use_ssr=False,
                       batch_size=len(SCORED)), "5_sample_text_to_video_base", out_dir)
    run(sample_command(ssr_text_prompts, video_dir, "stunet", runs["stunet"], runs["ssr"], steps),
        "5_sample_text_to_video_ssr", out_dir)
    # The conditional clips keep the given content by known-content replacement (sample/base.py and sample/ssr.py,
    # base and SSR); the fine-tuned model's own fidelity, without it, is measured on base-only clips beside.
    run(sample_command(conditional_prompts, video_dir, "conditional", runs["conditional"], runs["ssr"], steps,
                       replace_known=True), "6_sample_conditional", out_dir)
    model_only_dir = os.path.join(out_dir, "videos_conditional_model_only")
    run(sample_command(conditional_prompts, model_only_dir, "conditional", runs["conditional"], runs["ssr"], steps,
                       use_ssr=False), "6_sample_conditional_model_only", out_dir)

    sheet = os.path.join(out_dir, "contact_sheet.png")
    count = contact_sheet([base_dir, video_dir], sheet)
    report = quality_report(base_dir, steps.frames)
    report["conditioning"] = condition_report(video_dir, condition["image"])
    report["conditioning_model_only"] = condition_report(model_only_dir, condition["image"])
    report["ssr_psnr"] = ssr_psnr_report(out_dir, runs["ssr"], steps)
    with open(os.path.join(out_dir, "quality.json"), "w") as file:
        json.dump(report, file, indent=2)
    print(f"\nvideos: {video_dir} (base only: {base_dir})\ncontact sheet ({count} videos): {sheet}")
    tables = score_tables(report)
    for table in tables:
        print(f"{table.title}:\n  {'':28s}" + "".join(f"{column:>14s}" for column in table.columns))
        for name, values in table.rows.items():
            print(f"  {name:28s}" + "".join(f"{'n/a' if value is None else f'{value:.3f}':>14s}" for value in values))
    print(f"given content kept by the conditional clips (mean absolute error, pixels in [-1, 1]; "
          f"want <= {CONDITION_ERROR_LIMIT}), with known-content replacement / the fine-tuned model alone (base):")
    for name, value in report["conditioning"].items():
        alone = report["conditioning_model_only"][name]
        verdicts = ["ok" if error <= CONDITION_ERROR_LIMIT else "HIGH" for error in (value, alone)]
        print(f"  {name:32s} {value:.3f} {verdicts[0]:4s} / {alone:.3f} {verdicts[1]}")
    title = f"Lumiere demo ({preset})"
    print(f"page: {write_page(out_dir, report, runs, base_dir, video_dir, model_only_dir, title, tables)}")
    print(f"demo finished in {(time.perf_counter() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
