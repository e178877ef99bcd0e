"""The scored prompts and their held-out combinations: drawn with a fixed seed, and never in the train split."""

import itertools

import numpy as np

from lumiere_jax.data import synthetic_motion
from lumiere_jax.data import synthetic_prompts
from lumiere_jax.data import synthetic_render
from lumiere_jax.evaluate import caption_parser

TINY = next(config for config in synthetic_motion.BUILDER_CONFIGS if config.name == "tiny")


def test_scored_prompts_are_distinct_linear_motions_with_parseable_captions():
    scored = synthetic_prompts.scored_combinations()
    assert len(scored) == len(set(scored)) == synthetic_prompts.NUM_SCORED >= 16
    assert all(c.motion in ("left", "right", "up", "down") and c.object_color != c.background_color for c in scored)
    for combination in scored:
        parsed = caption_parser.parse_prompt(combination.caption())
        assert (parsed.object_color, parsed.shape, parsed.background_color, parsed.motion, parsed.speed) == (
            combination.object_color, combination.shape, combination.background_color, combination.motion,
            combination.speed)
    assert len(synthetic_prompts.held_out_combinations()) == synthetic_prompts.NUM_HELD_OUT


def test_validation_prompts_are_distinct_linear_motions_apart_from_the_scored_ones():
    validation = synthetic_prompts.validation_combinations()
    assert len(validation) == len(set(validation)) == synthetic_prompts.NUM_VALIDATION
    assert not set(validation) & set(synthetic_prompts.scored_combinations())
    assert all(c.motion in ("left", "right", "up", "down") and c.object_color != c.background_color
               for c in validation)
    assert synthetic_prompts.validation_combinations(5) == validation[:5]  # a prefix: the draw is seeded


def test_all_combinations_is_what_sample_scene_draws():
    combinations = synthetic_prompts.all_combinations()
    assert len(combinations) == 8 * 7 * 4 * 8 * 2 == len(set(combinations))
    rng = np.random.default_rng(0)
    drawn = {synthetic_prompts.Combination.of_scene(synthetic_render.sample_scene(rng, 2, 32, 32))
             for _ in range(200)}
    assert drawn <= set(combinations)


def test_train_split_never_shows_a_held_out_combination():
    held_out = synthetic_prompts.held_out_combinations()
    first_draws, hits = {}, []
    # Indices whose first draw is held out: the builder must redraw those in train and keep them in validation.
    for index in range(20_000):
        rng = np.random.default_rng((TINY.seed, 0, index))
        scene = synthetic_render.sample_scene(rng, TINY.num_frames, TINY.height, TINY.width)
        first_draws[index] = synthetic_prompts.Combination.of_scene(scene)
        if first_draws[index] in held_out:
            hits.append(index)
    assert len(hits) >= 20  # ~20000 * 8 / 3584 = 45 expected: the exclusion has something to do
    for index in itertools.chain(hits, range(TINY.num_train)):
        scene = synthetic_motion.draw_scene(TINY, "train", index)
        assert synthetic_prompts.Combination.of_scene(scene) not in held_out, index
        if index not in hits:  # untouched draws stay as they were
            assert synthetic_prompts.Combination.of_scene(scene) == first_draws[index]
    example = synthetic_motion.generate_example(TINY, "train", hits[0])
    assert synthetic_prompts.Combination(
        *(example[key] for key in ("object_color", "shape", "background_color", "motion", "speed"))) not in held_out
    validation_hits = [index for index in range(8_000)
                       if synthetic_prompts.is_held_out(synthetic_motion.draw_scene(TINY, "validation", index))]
    assert validation_hits  # validation keeps them
