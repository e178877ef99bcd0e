"""The shipped caption vocabulary: one whole-word piece per word of the caption grammar, and the regeneration
command (python -m lumiere_jax.data.make_vocab) reproduces the shipped file."""

import sentencepiece as spm

from lumiere_jax import storage
from lumiere_jax.data import make_vocab
from lumiere_jax.data import synthetic_prompts
from lumiere_jax.data import synthetic_render
from lumiere_jax.data import vocab

SHIPPED = vocab.SHIPPED_SENTENCEPIECE_MODELS[vocab.CAPTION_VOCABULARY]


def grammar_words() -> set[str]:
    """Every word a caption can hold, from the renderer's tables and one caption of each motion and speed."""
    words = {*synthetic_render.COLOR_NAMES, *synthetic_render.SHAPES}
    for motion in synthetic_render.MOTIONS:
        for speed in synthetic_render.SPEEDS:
            words |= set(synthetic_prompts.Combination("red", "circle", "blue", motion, speed).caption().split())
    return words


def test_every_word_of_the_grammar_is_one_whole_word_piece():
    processor = spm.SentencePieceProcessor(model_file=SHIPPED)
    words = grammar_words()
    assert len(words) == 31
    for word in words:
        assert processor.encode(word, out_type=str) == ["\u2581" + word], word
    assert processor.get_piece_size() == len(words) + 3  # <pad>, </s>, <unk> and one piece per word
    assert (processor.pad_id(), processor.eos_id(), processor.unk_id(), processor.bos_id()) == (0, 1, 2, -1)


def test_captions_tokenize_to_one_id_per_word_without_unknowns():
    vocabulary = vocab.get_vocabulary(vocab.CAPTION_VOCABULARY)
    captions = synthetic_prompts.all_captions()
    tokens, mask = vocab.tokenize(captions, vocabulary, 16)
    assert (mask.sum(axis=1) == [len(caption.split()) + 1 for caption in captions]).all()  # + EOS
    assert not (tokens == vocabulary.unk_id).any()
    assert vocabulary.decode(vocabulary.encode(captions[0])) == captions[0]


def test_regenerating_gives_the_shipped_file(tmp_path):
    output = tmp_path / "captions.model"
    assert make_vocab.main([f"--output={output}"]) == 0
    assert storage.read_bytes(output) == storage.read_bytes(SHIPPED)
