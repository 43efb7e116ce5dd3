"""Fakes and small random data for the retriever tests (CPU, no network, no weights)."""

from __future__ import annotations

import re
import string
import zlib

import numpy as np
import pytest


class FakeTokenizer:
    """A BERT-like word tokenizer with a fixed special vocabulary and hashed word ids."""

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]"]

    def __init__(self) -> None:
        self.vocab = {tok: i for i, tok in enumerate(self.specials)}
        for ch in string.punctuation:
            self.vocab[ch] = len(self.vocab)
        self.pad_token_id, self.unk_token_id = 0, 1
        self.cls_token_id, self.sep_token_id, self.mask_token_id = 2, 3, 4
        self.unk_token = "[UNK]"

    def _word_id(self, word: str) -> int:
        if word in self.vocab:
            return self.vocab[word]
        return 1000 + zlib.crc32(word.lower().encode()) % 5000

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self._word_id(w) for w in re.findall(r"\w+|[^\w\s]", text)]
        return [2, *ids, 3] if add_special_tokens else ids

    def __call__(self, text, add_special_tokens=True, truncation=False, max_length=None, **kwargs):
        ids = self.encode(text, add_special_tokens=False)
        if truncation and max_length is not None:
            ids = ids[: max_length - (2 if add_special_tokens else 0)]
        return {"input_ids": [2, *ids, 3] if add_special_tokens else ids}

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        return [self.vocab.get(t, self.unk_token_id) for t in tokens]


class FakeTokenEncoder:
    """Token vector = a fixed random unit vector per token id (a context-free 'model')."""

    model_name = "fake-token-encoder"

    def __init__(self, dim: int = 16) -> None:
        self.dim = dim
        self.tokenizer = FakeTokenizer()
        self.calls: list[list[list[int]]] = []
        self.mask_calls: list[list[list[int]] | None] = []

    def vector(self, token_id: int) -> np.ndarray:
        v = np.random.default_rng(token_id).standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def encode_token_ids(self, token_ids, attention_masks=None):
        self.calls.append([list(t) for t in token_ids])
        self.mask_calls.append(None if attention_masks is None else [list(m) for m in attention_masks])
        return [np.stack([self.vector(t) for t in ids]) for ids in token_ids]


@pytest.fixture
def fake_encoder() -> FakeTokenEncoder:
    return FakeTokenEncoder()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def random_docs(rng: np.random.Generator, n: int, dim: int, lo: int = 4, hi: int = 24):
    docs = []
    for _ in range(n):
        x = rng.standard_normal((int(rng.integers(lo, hi)), dim)).astype(np.float32)
        docs.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    return docs


@pytest.fixture
def make_docs():
    """``make_docs(rng, n, dim)`` -> list of normalized ``[L_i, dim]`` arrays."""
    return random_docs
