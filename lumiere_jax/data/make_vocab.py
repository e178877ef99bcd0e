"""Trains the word-level SentencePiece vocabulary of the synthetic captions (the tiny runs' vocabulary).

    python -m lumiere_jax.data.make_vocab [--output lumiere_jax/data/assets/synthetic_captions.model]

The corpus is every caption the dataset can produce (`synthetic_prompts.all_captions`), in sorted order, and
SentencePiece's `word` model gives each whitespace-separated word one piece, so a caption of n words is n ids
(+ EOS). T5's id convention: pad 0, EOS 1, UNK 2, no BOS. Training is deterministic (one thread, fixed corpus);
tests/data/test_make_vocab.py checks that regenerating gives the shipped file.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Sequence

import sentencepiece as spm

from lumiere_jax import storage
from lumiere_jax.data import synthetic_prompts
from lumiere_jax.data import vocab


def train_caption_vocabulary(captions: Sequence[str]) -> bytes:
    """A serialised SentencePiece word model with one piece per distinct word of `captions`."""
    words = {word for caption in captions for word in caption.split()}
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(captions), model_writer=model, model_type="word", vocab_size=len(words) + 3,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        # No NFKC table: the corpus is lowercase ASCII, and the table would make the file 250 KB instead of 1.
        normalization_rule_name="identity", num_threads=1, minloglevel=2)
    return model.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=vocab.SHIPPED_SENTENCEPIECE_MODELS[vocab.CAPTION_VOCABULARY],
                        help="where to write the model (default: the shipped package file)")
    args = parser.parse_args(argv)
    model = train_caption_vocabulary(synthetic_prompts.all_captions())
    storage.write_bytes_atomic(args.output, model)
    print(f"wrote {args.output} ({len(model)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
