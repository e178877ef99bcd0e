"""Text vocabularies for the frozen T5 encoder and batch tokenisation.

By default text is tokenised at the byte level as in ByT5 (`id = utf-8 byte + 3`, PAD=0, EOS=1, UNK=2),
which needs no model file. A SentencePiece model can be given instead: a T5 v1.1 `spiece.model` path, or the
name of one shipped with the package: "synthetic_captions", one piece per word of the synthetic captions
(the tiny runs' vocabulary; `python -m lumiere_jax.data.make_vocab` regenerates it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import seqio

CAPTION_VOCABULARY = "synthetic_captions"
SHIPPED_SENTENCEPIECE_MODELS: dict[str, str] = {
    CAPTION_VOCABULARY: os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "synthetic_captions.model"),
}


def get_vocabulary(sentencepiece_model_path: str | None = None) -> seqio.Vocabulary:
    """Returns ByT5's byte vocabulary, or the SentencePiece vocabulary of a shipped name or a path."""
    if sentencepiece_model_path is None:
        return seqio.ByteVocabulary()
    sentencepiece_model_path = SHIPPED_SENTENCEPIECE_MODELS.get(sentencepiece_model_path, sentencepiece_model_path)
    if not os.path.isfile(sentencepiece_model_path):
        raise FileNotFoundError(
            f"SentencePiece model {sentencepiece_model_path!r} does not exist; pass the path of a T5 "
            f"`spiece.model` file, a shipped vocabulary ({sorted(SHIPPED_SENTENCEPIECE_MODELS)}), or None for "
            "the byte-level (ByT5) vocabulary")
    return seqio.SentencePieceVocabulary(sentencepiece_model_path)


def tokenize(
    texts: Sequence[str], vocabulary: seqio.Vocabulary, max_length: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Tokenises texts as T5 does: ids, then EOS; truncated to `max_length` (EOS kept) and padded.

    Returns `tokens: int32 [B, L]` (padding = vocabulary.pad_id, 0) and `mask: bool [B, L]`
    (True = real token, EOS included), with `L = max_length`.
    """
    if max_length < 1:
        raise ValueError(f"max_length={max_length} must be at least 1 (room for the EOS token)")
    tokens = np.full((len(texts), max_length), vocabulary.pad_id, dtype=np.int32)
    mask = np.zeros((len(texts), max_length), dtype=bool)
    for row, text in enumerate(texts):
        ids = list(vocabulary.encode(text))[: max_length - 1] + [vocabulary.eos_id]
        tokens[row, : len(ids)] = ids
        mask[row, : len(ids)] = True
    return tokens, mask
