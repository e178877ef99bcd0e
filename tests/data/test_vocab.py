"""Vocabularies and tokenisation: ByT5 byte ids, EOS/padding/truncation, SentencePiece round trip."""

import numpy as np
import pytest
import sentencepiece as spm
from transformers import ByT5Tokenizer

from lumiere_jax.data import vocab

TEXTS = ["a cat", "héllo wörld", "日本語のテキスト 🙂", ""]


def byt5_reference(text: str, max_length: int) -> list[int]:
    """ByT5 rule, computed independently: utf-8 bytes + 3, EOS = 1, truncated keeping EOS, PAD = 0."""
    ids = [byte + 3 for byte in text.encode("utf-8")][: max_length - 1] + [1]
    return ids + [0] * (max_length - len(ids))


@pytest.mark.parametrize("max_length", [1, 6, 64])
def test_byte_tokenize_matches_byt5_rule(max_length):
    tokens, mask = vocab.tokenize(TEXTS, vocab.get_vocabulary(), max_length)
    assert tokens.dtype == np.int32 and mask.dtype == bool
    assert tokens.shape == mask.shape == (len(TEXTS), max_length)
    np.testing.assert_array_equal(tokens, [byt5_reference(text, max_length) for text in TEXTS])
    # Byte ids are >= 3, so real tokens are exactly the non-pad ones; every row ends in EOS.
    np.testing.assert_array_equal(mask, tokens != 0)
    last = mask.sum(axis=1) - 1
    np.testing.assert_array_equal(tokens[np.arange(len(TEXTS)), last], 1)


def test_byte_tokenize_matches_transformers_byt5_tokenizer():
    reference = ByT5Tokenizer()(TEXTS, padding="max_length", truncation=True, max_length=12)
    tokens, mask = vocab.tokenize(TEXTS, vocab.get_vocabulary(), 12)
    np.testing.assert_array_equal(tokens, reference["input_ids"])
    np.testing.assert_array_equal(mask, np.asarray(reference["attention_mask"], bool))


def test_tokenize_rejects_zero_length():
    with pytest.raises(ValueError, match="max_length=0"):
        vocab.tokenize(["x"], vocab.get_vocabulary(), 0)


def test_missing_sentencepiece_file_is_named(tmp_path):
    path = str(tmp_path / "nope.model")
    with pytest.raises(FileNotFoundError, match="nope.model"):
        vocab.get_vocabulary(path)


def test_sentencepiece_vocabulary_round_trip(tmp_path):
    sentences = ["a red fox jumps over the lazy dog", "the dog sleeps in the sun",
                 "a small cat watches the red fox", "waves roll onto the sandy beach at dawn"] * 5
    prefix = str(tmp_path / "tiny_spm")
    # T5's id convention: pad 0, eos 1, unk 2, no bos.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_prefix=prefix, vocab_size=48, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2)
    vocabulary = vocab.get_vocabulary(prefix + ".model")
    processor = spm.SentencePieceProcessor(model_file=prefix + ".model")

    text = "the red dog watches the sun"
    ids = processor.encode(text)
    tokens, mask = vocab.tokenize([text, "a cat"], vocabulary, len(ids) + 3)
    np.testing.assert_array_equal(tokens[0, : len(ids) + 1], ids + [1])
    assert mask[0].sum() == len(ids) + 1 and not mask[0, len(ids) + 1:].any()
    assert tokens[1, mask[1].sum() - 1] == 1
    assert vocabulary.decode(tokens[0, : len(ids)].tolist()) == text
    assert vocabulary.decode(vocabulary.encode(sentences[3])) == sentences[3]
