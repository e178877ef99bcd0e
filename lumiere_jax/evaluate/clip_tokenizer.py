"""CLIP's byte-level BPE tokenizer, read from the user's `vocab.json` + `merges.txt` (HF CLIP repo files).

Text is whitespace-normalised and lower-cased, split into words / single digits / punctuation runs, each word
is mapped byte-wise to printable characters, gets `</w>` on its last symbol and is merged with the BPE merge
ranks. A prompt becomes `<|startoftext|> ... <|endoftext|>`, truncated to the context length and padded.
Differences from OpenAI's tokenizer: no ftfy text repair; Unicode letters/digits via Python `re` classes.
"""

from __future__ import annotations

import functools
import json
import re

import numpy as np

START, END = "<|startoftext|>", "<|endoftext|>"
_WORD_PATTERN = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+",
                           re.IGNORECASE)


@functools.cache
def byte_to_unicode() -> dict[int, str]:
    """Reversible byte -> printable character map of byte-level BPE (printable Latin-1 bytes map to themselves)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


class CLIPTokenizer:
    """`tokenizer(prompts) -> (tokens int32 [N, L], mask bool [N, L])`."""

    def __init__(self, vocab_path: str, merges_path: str, context_length: int = 77):
        with open(vocab_path, encoding="utf-8") as file:
            self.vocab: dict[str, int] = json.load(file)
        with open(merges_path, encoding="utf-8") as file:
            lines = [line.split() for line in file.read().splitlines()
                     if line.strip() and not line.startswith("#version")]
        self.ranks = {tuple(pair): rank for rank, pair in enumerate(lines)}
        for special in (START, END):
            if special not in self.vocab:
                raise ValueError(f"{vocab_path} has no {special!r} token; give CLIP's vocab.json")
        self.context_length = context_length
        self._cache: dict[str, list[str]] = {}

    def bpe(self, word: str) -> list[str]:
        """Merges the symbols of one word by merge rank (lowest first)."""
        if word in self._cache:
            return self._cache[word]
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            pairs = {(symbols[i], symbols[i + 1]) for i in range(len(symbols) - 1)}
            best = min(pairs, key=lambda pair: self.ranks.get(pair, float("inf")))
            if best not in self.ranks:
                break
            merged, index = [], 0
            while index < len(symbols):
                if index < len(symbols) - 1 and (symbols[index], symbols[index + 1]) == best:
                    merged.append(symbols[index] + symbols[index + 1])
                    index += 2
                else:
                    merged.append(symbols[index])
                    index += 1
            symbols = merged
        self._cache[word] = symbols
        return symbols

    def encode(self, text: str) -> list[int]:
        """Token ids of one prompt without start/end tokens."""
        text = " ".join(text.split()).lower()
        encoder = byte_to_unicode()
        ids = []
        for word in _WORD_PATTERN.findall(text):
            characters = "".join(encoder[byte] for byte in word.encode("utf-8"))
            for symbol in self.bpe(characters):
                if symbol not in self.vocab:
                    raise ValueError(f"BPE symbol {symbol!r} of {text!r} is not in the vocabulary; "
                                     "vocab.json and merges.txt must come from the same CLIP model")
                ids.append(self.vocab[symbol])
        return ids

    def __call__(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        tokens = np.full((len(prompts), self.context_length), self.vocab[END], np.int32)
        mask = np.zeros((len(prompts), self.context_length), bool)
        for row, prompt in enumerate(prompts):
            ids = [self.vocab[START]] + self.encode(prompt)[:self.context_length - 2] + [self.vocab[END]]
            tokens[row, :len(ids)] = ids
            mask[row, :len(ids)] = True
        return tokens, mask
