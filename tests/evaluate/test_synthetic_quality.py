"""Tests for the synthetic_motion quality analyser and its caption parser (NumPy only)."""

import dataclasses
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from lumiere_jax.data import synthetic_prompts
from lumiere_jax.data import synthetic_render
from lumiere_jax.data import video_io
from lumiere_jax.evaluate import caption_parser
from lumiere_jax.evaluate import synthetic_quality

ATTRIBUTE_METRICS = ("object_color", "background_color", "shape", "motion", "speed")
REVERSED_MOTION = {"left": "right", "right": "left", "up": "down", "down": "up",
                   "clockwise": "counterclockwise", "counterclockwise": "clockwise"}


def ground_truth_scenes(num_frames, height, width, seed=0):
    """One scene per (motion, speed), colours drawn by sample_scene, shapes cycled."""
    rng = np.random.default_rng(seed)
    scenes = []
    for index, (motion, speed) in enumerate(
            itertools.product(synthetic_render.MOTIONS, synthetic_render.SPEEDS)):
        scene = synthetic_render.sample_scene(rng, num_frames, height, width)
        scenes.append(dataclasses.replace(
            scene, motion=motion, speed=speed,
            shape=synthetic_render.SHAPES[index % len(synthetic_render.SHAPES)],
            positions=synthetic_render.trajectory(motion, speed, num_frames, height, width, rng)))
    return scenes


def render_all(scenes, height, width):
    return [synthetic_render.render(scene, height, width) for scene in scenes]


def binomial_blur(video):
    """Separable [1, 2, 1] / 4 blur over H and W: video uint8 [T, H, W, 3] -> float [T, H, W, 3]."""
    padded = np.pad(video.astype(np.float32), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    rows = 0.25 * padded[:, :-2] + 0.5 * padded[:, 1:-1] + 0.25 * padded[:, 2:]
    return 0.25 * rows[:, :, :-2] + 0.5 * rows[:, :, 1:-1] + 0.25 * rows[:, :, 2:]


@pytest.fixture(scope="module", params=[(16, 32, 32), (12, 48, 64)], ids=["16x32x32", "12x48x64"])
def clips(request):
    num_frames, height, width = request.param
    scenes = ground_truth_scenes(num_frames, height, width)
    return scenes, render_all(scenes, height, width)


# Caption parser.

def test_parser_round_trips_every_caption():
    for object_color, background_color, shape, motion, speed in itertools.product(
            synthetic_render.COLOR_NAMES, synthetic_render.COLOR_NAMES, synthetic_render.SHAPES,
            synthetic_render.MOTIONS, synthetic_render.SPEEDS):
        scene = synthetic_render.Scene(shape, object_color, background_color, motion, speed, 1.0,
                                       np.zeros((1, 2), np.float32))
        parsed = caption_parser.parse_prompt(synthetic_render.caption(scene))
        # "standing still" carries no speed word.
        assert parsed == caption_parser.PromptAttributes(
            object_color, shape, background_color, motion, None if motion == "still" else speed)
        assert caption_parser.parse_prompt(synthetic_render.caption(scene, include_motion=False)) == \
            caption_parser.PromptAttributes(object_color, shape, background_color, None, None)


def test_parser_reads_hand_written_prompts():
    assert caption_parser.parse_prompt(
        "A cyan Triangle circling quickly counterclockwise on a black background.") == \
        caption_parser.PromptAttributes("cyan", "triangle", "black", "counterclockwise", "fast")
    assert caption_parser.parse_prompt("a red square  moving slowly to the left on a blue background") == \
        caption_parser.PromptAttributes("red", "square", "blue", "left", "slow")


@pytest.mark.parametrize("prompt", [
    "a purple circle moving slowly to the left on a blue background",
    "a red circle moving sideways on a blue background",
    "a cat playing the piano",
])
def test_parser_rejects_prompts_outside_the_grammar(prompt):
    with pytest.raises(ValueError, match="not a synthetic_motion caption"):
        caption_parser.parse_prompt(prompt)


# Building blocks against hand-made references.

def test_largest_component_uses_4_connectivity():
    mask = np.zeros((6, 6), bool)
    mask[0:2, 0:2] = True                          # a 4-pixel block
    mask[[2, 3, 4, 5], [2, 3, 4, 5]] = True        # a diagonal chain: 8-connected to the block only
    mask[3:6, 0] = True                            # a 3-pixel column
    block = np.zeros_like(mask)
    block[0:2, 0:2] = True
    np.testing.assert_array_equal(synthetic_quality.largest_component(mask), block)
    mask[4:6, 1] = True                            # the column grows to 5 pixels and wins
    column = np.zeros_like(mask)
    column[3:6, 0] = column[4:6, 1] = True
    np.testing.assert_array_equal(synthetic_quality.largest_component(mask), column)
    assert not synthetic_quality.largest_component(np.zeros((4, 4), bool)).any()


@pytest.mark.parametrize("shape", synthetic_render.SHAPES)
@pytest.mark.parametrize("radius", [4.8, 9.0])
def test_classify_shape_recognises_off_grid_templates(shape, radius):
    center = np.array([15.3, 17.8])
    mask = synthetic_render.shape_mask(shape, center, radius, 32, 36)
    assert synthetic_quality.classify_shape(mask) == shape


def test_classify_motion_on_hand_made_tracks():
    config = synthetic_quality.AnalysisConfig()
    found = np.ones(9, bool)
    # Screen order right -> bottom -> left -> top -> right is clockwise when y points down.
    compass = {"right": (16, 24), "bottom": (24, 16), "left": (16, 8), "top": (8, 16)}
    clockwise = np.array([compass[name] for name in ["right", "bottom", "left", "top"] * 2 + ["right"]],
                         float)
    assert synthetic_quality.classify_motion(clockwise, found, 32, 32, config) == ("clockwise", "fast")
    assert synthetic_quality.classify_motion(clockwise[::-1], found, 32, 32, config)[0] == "counterclockwise"
    steps = np.arange(9)[:, None]
    moving_up = np.array([26.0, 10.0]) - steps * np.array([2.0, 0.1])
    assert synthetic_quality.classify_motion(moving_up, found, 32, 32, config)[0] == "up"
    bounce = np.stack([20 - 10 * np.abs(np.sin(np.pi * steps[:, 0] / 8)), np.full(9, 12.0)], -1)
    assert synthetic_quality.classify_motion(bounce, found, 32, 32, config) == ("bouncing", "slow")
    jitter = np.array([16.0, 16.0]) + np.random.default_rng(0).normal(0, 0.3, (9, 2))
    assert synthetic_quality.classify_motion(jitter, found, 32, 32, config) == ("still", None)


# Whole clips.

def test_ground_truth_clips_score_perfectly(clips):
    scenes, videos = clips
    result = synthetic_quality.score_videos(videos, [synthetic_render.caption(s) for s in scenes])
    assert result["num_videos"] == len(videos)
    for name in ATTRIBUTE_METRICS + ("color", "detection_rate", "identity_consistency"):
        assert result["metrics"][name] == 1.0, name
    assert result["metrics"]["size_stability"] > 0.9
    assert result["metrics"]["temporal_consistency"] > 0.95
    assert result["chance"] == synthetic_quality.chance_levels([synthetic_render.caption(s) for s in scenes])
    still = [d for d in result["videos"] if d["expected"]["motion"] == "still"]
    assert still and all(d["scores"]["speed"] is None for d in still)


def test_float_videos_in_minus_one_one_match_uint8(clips):
    scenes, videos = clips
    as_float = (videos[0].astype(np.float32) / 127.5 - 1.0).astype(np.float32)
    assert synthetic_quality.analyse_video(as_float).object_color == scenes[0].object_color
    with pytest.raises(ValueError, match="one clip at a time"):
        synthetic_quality.analyse_video(as_float[None])


def test_wrong_prompts_score_zero(clips):
    scenes, videos = clips
    analyses = [synthetic_quality.analyse_video(video) for video in videos]
    palette = synthetic_render.COLOR_NAMES
    swap_shape = {s: synthetic_render.SHAPES[(i + 1) % 4] for i, s in enumerate(synthetic_render.SHAPES)}

    def other_color(color, avoid):
        return next(c for c in palette if c not in (color, avoid))

    def mean_score(metric, prompt_scenes, clip_analyses):
        values = [synthetic_quality.score_analysis(
            analysis, caption_parser.parse_prompt(synthetic_render.caption(scene)))[metric]
            for analysis, scene in zip(clip_analyses, prompt_scenes)]
        return None if None in values else np.mean(values)

    wrong = {
        "object_color": [dataclasses.replace(s, object_color=other_color(s.object_color, s.background_color))
                         for s in scenes],
        "background_color": [
            dataclasses.replace(s, background_color=other_color(s.background_color, s.object_color))
            for s in scenes],
        "shape": [dataclasses.replace(s, shape=swap_shape[s.shape]) for s in scenes],
    }
    for metric, prompt_scenes in wrong.items():
        assert mean_score(metric, scenes, analyses) == 1.0, metric
        assert mean_score(metric, prompt_scenes, analyses) == 0.0, metric
    directional = [i for i, s in enumerate(scenes) if s.motion in REVERSED_MOTION]
    reversed_scenes = [dataclasses.replace(scenes[i], motion=REVERSED_MOTION[scenes[i].motion])
                       for i in directional]
    assert mean_score("motion", reversed_scenes, [analyses[i] for i in directional]) == 0.0
    # Speed is only scored when the motion is right.
    assert mean_score("speed", reversed_scenes, [analyses[i] for i in directional]) is None
    backwards = [synthetic_quality.analyse_video(videos[i][::-1]) for i in directional]
    own_scenes = [scenes[i] for i in directional]
    assert mean_score("motion", own_scenes, backwards) == 0.0
    assert mean_score("shape", own_scenes, backwards) == 1.0


@pytest.mark.parametrize("degradation", ["noise", "blur"])
def test_noisy_and_blurred_clips_keep_high_scores(clips, degradation):
    scenes, videos = clips
    rng = np.random.default_rng(1)
    if degradation == "noise":  # std 20 / 255, as float input in [-1, 1]
        degraded = [np.clip(v / 127.5 - 1.0 + rng.normal(0, 20 / 127.5, v.shape), -1, 1) for v in videos]
    else:
        degraded = [np.round(binomial_blur(v)).astype(np.uint8) for v in videos]
    result = synthetic_quality.score_videos(degraded, [synthetic_render.caption(s) for s in scenes])
    for name in ("object_color", "background_color", "motion", "detection_rate"):
        assert result["metrics"][name] == 1.0, name
    assert result["metrics"]["shape"] >= 0.9
    assert result["metrics"]["speed"] >= 0.9
    assert result["metrics"]["temporal_consistency"] > 0.9


def test_pure_noise_flags_no_object():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    result = synthetic_quality.score_videos(
        [noise], ["a red circle moving slowly to the left on a blue background"])
    detail = result["videos"][0]
    assert detail["predicted"]["frames_with_object"] == 0
    assert detail["predicted"]["object_color"] is None and detail["predicted"]["motion"] is None
    for name in ("object_color", "background_color", "shape", "motion", "temporal_consistency"):
        assert result["metrics"][name] == 0.0, name


def test_temporal_consistency_metrics_match_numpy_reference():
    height = width = 32
    base = synthetic_render.Scene("square", "red", "blue", "still", "slow", 6.0,
                                  np.full((12, 2), 16.0, np.float32))
    shrinking = [dataclasses.replace(base, radius=6.0 - 0.2 * t, positions=base.positions[:1])
                 for t in range(12)]
    frames = np.concatenate([synthetic_render.render(s, height, width) for s in shrinking])
    frames[6:9] = synthetic_render.render(dataclasses.replace(base, object_color="yellow"),
                                          height, width)[6:9]
    frames[9:] = np.array(synthetic_render.COLORS["blue"], np.uint8)  # the object vanishes
    prompt = synthetic_render.caption(base)
    detail = synthetic_quality.score_videos([frames], [prompt])["videos"][0]
    scores = detail["scores"]
    assert scores["detection_rate"] == pytest.approx(9 / 12)
    assert scores["identity_consistency"] == pytest.approx(6 / 9)
    areas = np.array([synthetic_render.shape_mask("square", np.array([16.0, 16.0]), s.radius,
                                                  height, width).sum() for s in shrinking[:9]], float)
    areas[6:9] = areas[0]  # the yellow frames were drawn at the base radius
    assert scores["size_stability"] == pytest.approx(1 - areas.std() / areas.mean())
    assert scores["temporal_consistency"] == pytest.approx(
        np.mean([9 / 12, 6 / 9, 1 - areas.std() / areas.mean()]))


def test_cli_prints_json_scores_for_an_mp4_folder(tmp_path):
    scenes = ground_truth_scenes(16, 32, 32, seed=3)[:4:2]  # left and right, slowly
    for index, scene in enumerate(scenes):
        video_io.write_mp4(tmp_path / f"clip{index}.mp4", synthetic_render.render(scene, 32, 32), fps=8)
        (tmp_path / f"clip{index}.json").write_text(json.dumps({"prompt": synthetic_render.caption(scene)}))
    completed = subprocess.run(
        [sys.executable, "-m", "lumiere_jax.evaluate.synthetic_quality", "--videos_dir", str(tmp_path)],
        capture_output=True, text=True, check=True)
    result = json.loads(completed.stdout)
    assert [d["name"] for d in result["videos"]] == ["clip0", "clip1"]
    for name in ("object_color", "background_color", "motion"):
        assert result["metrics"][name] == 1.0, name
    (tmp_path / "clip1.json").unlink()
    with pytest.raises(FileNotFoundError, match="clip1.json"):
        synthetic_quality.read_videos_dir(tmp_path)



def test_chance_levels_are_the_closed_form_of_the_attribute_counts():
    """A text-blind draw from the training split has a stated value v with probability (N_v - H_v) / (N - H):
    N = 8 * 7 * 4 * 8 * 2 combinations, N_v of them with v (N / 8 for a colour, N / 4 for a shape, N / 8 for a
    motion), H = 8 held out, H_v of them with v. Speed is conditional on the motion: (N_ms - H_ms) / (N_m - H_m)."""
    total, held_out = 8 * 7 * 4 * 8 * 2, sorted(synthetic_prompts.held_out_combinations())
    counts = {"object_color": total // 8, "background_color": total // 8, "shape": total // 4, "motion": total // 8}

    def closed_form(name, value):
        return (counts[name] - sum(getattr(c, name) == value for c in held_out)) / (total - len(held_out))

    for combination in [*held_out, *synthetic_prompts.scored_combinations()]:
        chance = synthetic_quality.chance_levels([combination.caption()])
        for name in counts:
            assert chance[name] == pytest.approx(closed_form(name, getattr(combination, name)), abs=1e-12), name
        same_motion = [c for c in held_out if c.motion == combination.motion]
        speed = ((total // 16 - sum(c.speed == combination.speed for c in same_motion))
                 / (total // 8 - len(same_motion)))
        assert chance["speed"] == pytest.approx(speed, abs=1e-12)
        assert chance["color"] == pytest.approx((chance["object_color"] + chance["background_color"]) / 2)
    # Over many prompts: about 1/8, 1/4, 1/8, 1/2; a still prompt states no speed, a still image no motion.
    prompts = [c.caption() for c in synthetic_prompts.scored_combinations()]
    chance = synthetic_quality.chance_levels(prompts + ["a red circle standing still on a blue background",
                                                        "a green square on a white background"])
    for name, value in {"object_color": 1 / 8, "shape": 1 / 4, "motion": 1 / 8, "speed": 1 / 2}.items():
        assert chance[name] == pytest.approx(value, rel=5e-3), name
