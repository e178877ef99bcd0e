"""Pre-trains the CPU runs' tiny T5 encoder on the synthetic captions, so that the U-Net reads words that already
mean something.

    python -m lumiere_jax.train.caption_encoder [--output DIR]   (default: the shipped t5_weights.CAPTION_ENCODER)

Objective (our choice; the paper uses a frozen T5-XXL trained on web text): every real token's output predicts,
through linear heads dropped afterwards, all the attributes the caption states (object colour, shape,
background colour, motion, speed). Each token then carries the whole caption in a linearly readable form, so
the U-Net's cross-attention finds "red" as the object's colour wherever it looks, and "red circle on a blue
background" differs from "blue circle on a red background". The corpus is every caption of the grammar (clips
and stills, `synthetic_prompts.all_captions`) except the held-out scored combinations and a fixed eighth of the
combinations kept for the probe test (tests/train/test_caption_encoder.py). 300 Adam steps of 128 captions take
10-40 s on a busy 2-core machine: too long to repeat in every process of a run (each stage, each sampling job, the
text cache), so the result is shipped (94 KB, config.json + model.safetensors) and every process loads the same
weights; this command regenerates it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lumiere_jax.data import synthetic_prompts
from lumiere_jax.data import synthetic_render
from lumiere_jax.data import vocab
from lumiere_jax.models import t5
from lumiere_jax.models import t5_weights

PRESET = "tiny_words"
TEXT_LENGTH = 16  # the longest caption is 12 words + EOS (gin_configs/data/synthetic_motion_tiny.gin)
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "object_color": synthetic_render.COLOR_NAMES, "shape": synthetic_render.SHAPES,
    "background_color": synthetic_render.COLOR_NAMES, "motion": synthetic_render.MOTIONS,
    "speed": synthetic_render.SPEEDS}
PROBE_FRACTION = 8  # one combination in 8 is kept out of pre-training for the probe test
PROBE_SEED = 8


@dataclasses.dataclass(frozen=True)
class Captions:
    """Tokenised captions and their attribute labels (`ATTRIBUTES` order, -1 where the caption is silent)."""

    texts: tuple[str, ...]
    tokens: np.ndarray  # [N, L] int32
    mask: np.ndarray    # [N, L] bool
    labels: np.ndarray  # [N, len(ATTRIBUTES)] int32


def tokenize_combinations(combinations: Sequence[synthetic_prompts.Combination], stills: bool = True) -> Captions:
    """The clip caption of each combination and, with `stills`, each distinct still caption (no motion, speed)."""
    rows: dict[str, list[int]] = {}
    for combination in combinations:
        values = dataclasses.asdict(combination)
        labels = [ATTRIBUTES[name].index(values[name]) for name in ATTRIBUTES]
        if combination.motion == "still":
            labels[list(ATTRIBUTES).index("speed")] = -1  # "standing still" names no speed
        rows[combination.caption()] = labels
        if stills:
            rows[combination.caption(include_motion=False)] = labels[:3] + [-1, -1]
    texts = tuple(sorted(rows))
    tokens, mask = vocab.tokenize(texts, vocab.get_vocabulary(vocab.CAPTION_VOCABULARY), TEXT_LENGTH)
    return Captions(texts, tokens, mask, np.array([rows[text] for text in texts], np.int32))


def probe_split() -> tuple[tuple[synthetic_prompts.Combination, ...], tuple[synthetic_prompts.Combination, ...]]:
    """(pre-training, probe) combinations: the held-out scored combinations are in neither; a seeded eighth of
    the rest is kept for the probe."""
    held_out = synthetic_prompts.held_out_combinations()
    candidates = [combination for combination in synthetic_prompts.all_combinations() if combination not in held_out]
    order = np.random.default_rng(PROBE_SEED).permutation(len(candidates))
    probe = {int(index) for index in order[: len(candidates) // PROBE_FRACTION]}
    return (tuple(c for i, c in enumerate(candidates) if i not in probe),
            tuple(c for i, c in enumerate(candidates) if i in probe))


def pooled_embeddings(encoder: t5.TextEncoder, params: t5.Params, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the real tokens' embeddings: `[N, d_model]`."""
    embeddings = encoder.encode(params, jnp.asarray(tokens), jnp.asarray(mask))  # [N, L, D], zero at padding
    return np.asarray(embeddings.sum(axis=1) / mask.sum(axis=1, keepdims=True))


class AttributeHeads(nn.Module):
    """One linear classifier per attribute on every token: `[B, L, D]` -> {name: logits [B, L, classes]}."""

    @nn.compact
    def __call__(self, embeddings: jnp.ndarray) -> dict[str, jnp.ndarray]:
        return {name: nn.Dense(len(values), name=name)(embeddings) for name, values in ATTRIBUTES.items()}


def attribute_loss(variables, encoder: t5.TextEncoder, tokens, mask, labels) -> jnp.ndarray:
    """Cross-entropy of every real token's prediction of every stated attribute, averaged."""
    embeddings = encoder.module.apply({"params": variables["encoder"]}, tokens, mask)  # [B, L, D]
    logits = AttributeHeads().apply({"params": variables["heads"]}, embeddings)
    total, count = 0.0, 0.0
    for index, name in enumerate(ATTRIBUTES):
        label = labels[:, index]  # [B]
        weight = mask * (label >= 0)[:, None]  # [B, L]
        losses = optax.softmax_cross_entropy_with_integer_labels(logits[name], jnp.maximum(label, 0)[:, None])
        total += jnp.sum(losses * weight)
        count += jnp.sum(weight)
    return total / count


def pretrain(steps: int = 300, batch_size: int = 128, learning_rate: float = 1e-2, seed: int = 0) -> t5.Params:
    """The encoder's parameters after `steps` Adam steps on the pre-training captions (deterministic)."""
    encoder = t5.TextEncoder(t5.get_config(PRESET))
    captions = tokenize_combinations(probe_split()[0])
    init_key, heads_key = jax.random.split(jax.random.key(seed))
    variables = {"encoder": encoder.init(init_key, TEXT_LENGTH),
                 "heads": AttributeHeads().init(heads_key, jnp.zeros((1, 1, encoder.config.d_model)))["params"]}
    optimizer = optax.adam(learning_rate)
    # Every step in one compiled loop (a Python loop of tiny steps would spend its time dispatching).
    rng = np.random.default_rng(seed)
    rows = np.stack([rng.choice(len(captions.texts), batch_size, replace=False) for _ in range(steps)])  # [S, B]

    tokens, mask, labels = map(jnp.asarray, (captions.tokens, captions.mask, captions.labels))

    def step(carry, batch_rows):
        variables, state = carry
        loss, grads = jax.value_and_grad(attribute_loss)(
            variables, encoder, tokens[batch_rows], mask[batch_rows], labels[batch_rows])
        updates, state = optimizer.update(grads, state, variables)
        return (optax.apply_updates(variables, updates), state), loss

    (variables, _), _ = jax.jit(lambda carry, rows: jax.lax.scan(step, carry, rows))(
        (variables, optimizer.init(variables)), rows)
    return jax.tree.map(np.asarray, variables["encoder"])


@functools.lru_cache(maxsize=1)
def shipped_params() -> t5.Params:
    """The shipped caption encoder's parameters (`t5_weights.CAPTION_ENCODER`)."""
    return t5_weights.load_t5_encoder(t5_weights.CAPTION_ENCODER)[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=t5_weights.SHIPPED_ENCODERS[t5_weights.CAPTION_ENCODER],
                        help="Hugging Face-style folder to write (default: the shipped one)")
    args = parser.parse_args(argv)
    t5_weights.save_t5_encoder(args.output, t5.get_config(PRESET), pretrain())
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
