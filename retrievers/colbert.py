"""ColBERT encoding conventions on top of any :class:`~.encoders.TokenEncoder`.

Queries: ``[CLS] [Q] tokens [SEP]`` padded with ``[MASK]`` to ``query_maxlen`` (the masks
are real input tokens, so the model attends to them and they get vectors: query
augmentation). Documents: ``[CLS] [D] tokens [SEP]`` truncated to ``doc_maxlen``, with the
vectors of punctuation tokens dropped. ``[Q]`` / ``[D]`` are inserted after the first
special token only when configured (ColBERT checkpoints use ``[unused0]`` / ``[unused1]``);
without them any token-embedding model (e.g. all-MiniLM-L6-v2) works.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .arrays import l2_normalize
from .encoders import TokenEncoder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ColBERTConfig:
    """How queries and documents are turned into token ids.

    Attributes:
        query_maxlen: query length after ``[MASK]`` padding (ColBERT: 32).
        doc_maxlen: maximum document length in tokens, special tokens included.
        query_marker: token inserted after the first token of queries (e.g. ``"[unused0]"``),
            or ``None``.
        doc_marker: token inserted after the first token of documents (e.g. ``"[unused1]"``),
            or ``None``.
        mask_augment: pad queries with ``[MASK]`` up to ``query_maxlen``.
        skip_punctuation: drop the vectors of punctuation tokens from documents.
        normalize: L2-normalize the vectors the encoder returns.
    """

    query_maxlen: int = 32
    doc_maxlen: int = 180
    query_marker: str | None = None
    doc_marker: str | None = None
    mask_augment: bool = True
    skip_punctuation: bool = True
    normalize: bool = True

    @classmethod
    def colbert_v2(cls) -> ColBERTConfig:
        """The settings of ColBERT checkpoints: ``[unused0]`` / ``[unused1]`` markers."""
        return cls(query_marker="[unused0]", doc_marker="[unused1]")

    def __post_init__(self) -> None:
        if self.query_maxlen < 3 or self.doc_maxlen < 3:
            raise ValueError("query_maxlen and doc_maxlen must be at least 3")


class ColBERTEncoder:
    """Encodes queries and documents into ColBERT token vectors.

    Args:
        encoder: a :class:`~.encoders.TokenEncoder` (e.g. ``EngineTokenEncoder(llm)``).
        config: the conventions; default :class:`ColBERTConfig()` (no markers).
    """

    def __init__(self, encoder: TokenEncoder, config: ColBERTConfig | None = None) -> None:
        self.encoder = encoder
        self.config = config or ColBERTConfig()
        self.tokenizer = encoder.tokenizer
        self.model_name = getattr(encoder, "model_name", None)
        self.query_marker_id = self._marker_id(self.config.query_marker)
        self.doc_marker_id = self._marker_id(self.config.doc_marker)
        self.mask_id = self.tokenizer.mask_token_id
        if self.mask_id is None and self.config.mask_augment:
            self.mask_id = self.tokenizer.pad_token_id
            logger.warning("tokenizer has no mask token; padding queries with the pad token")
        self.skiplist = self._punctuation_ids() if self.config.skip_punctuation else set()

    @classmethod
    def from_llm(cls, llm: Any, config: ColBERTConfig | None = None) -> ColBERTEncoder:
        """Wrap a ``vllm_pool.LLM`` (token_embed) with :class:`~.encoders.EngineTokenEncoder`."""
        from .encoders import EngineTokenEncoder

        return cls(EngineTokenEncoder(llm), config)

    def _marker_id(self, token: str | None) -> int | None:
        if token is None:
            return None
        ids = self.tokenizer.convert_tokens_to_ids([token])
        unk = self.tokenizer.unk_token_id
        if not ids or ids[0] is None or (ids[0] == unk and token != self.tokenizer.unk_token):
            raise ValueError(f"marker {token!r} is not a token of this tokenizer")
        return int(ids[0])

    def _punctuation_ids(self) -> set[int]:
        ids = set()
        unk = self.tokenizer.unk_token_id
        for ch in string.punctuation:
            for tok_id in (
                *self.tokenizer.convert_tokens_to_ids([ch]),
                *self.tokenizer.encode(ch, add_special_tokens=False),
            ):
                if tok_id is not None and tok_id != unk:
                    ids.add(int(tok_id))
        return ids

    # -- token ids -----------------------------------------------------------------------
    def _ids(self, text: str, maxlen: int, marker: int | None) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"expected a string, got {type(text).__name__}")
        budget = maxlen - (marker is not None)
        ids = list(
            self.tokenizer(text, add_special_tokens=True, truncation=True, max_length=budget)["input_ids"]
        )
        if marker is not None:
            ids.insert(1, marker)  # after [CLS]
        return ids

    def query_token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """``[CLS] [Q]? tokens [SEP] [MASK]*`` ids, ``query_maxlen`` long with augmentation."""
        _check_texts(texts)
        cfg = self.config
        out = []
        for text in texts:
            ids = self._ids(text, cfg.query_maxlen, self.query_marker_id)
            if cfg.mask_augment:
                ids += [self.mask_id] * (cfg.query_maxlen - len(ids))
            out.append(ids)
        return out

    def document_token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """``[CLS] [D]? tokens [SEP]`` ids, at most ``doc_maxlen`` long."""
        _check_texts(texts)
        return [self._ids(t, self.config.doc_maxlen, self.doc_marker_id) for t in texts]

    # -- vectors -------------------------------------------------------------------------
    def encode_queries(self, texts: Sequence[str]) -> list[np.ndarray]:
        """One ``float32 [query_maxlen, D]`` matrix per query (fewer rows without
        augmentation)."""
        ids = self.query_token_ids(texts)
        return [self._post(v) for v in self.encoder.encode_token_ids(ids)]

    def encode_documents(self, texts: Sequence[str]) -> list[np.ndarray]:
        """One ``float32 [L, D]`` matrix per document, punctuation tokens removed."""
        ids = self.document_token_ids(texts)
        vectors = self.encoder.encode_token_ids(ids)
        out = []
        for tok_ids, vecs in zip(ids, vectors, strict=True):
            if len(vecs) != len(tok_ids):
                raise ValueError(f"encoder returned {len(vecs)} vectors for {len(tok_ids)} tokens")
            keep = np.asarray([t not in self.skiplist for t in tok_ids], dtype=bool)
            out.append(self._post(np.asarray(vecs)[keep]))
        return out

    def _post(self, vecs: Any) -> np.ndarray:
        arr = np.asarray(vecs, dtype=np.float32)
        return l2_normalize(arr) if self.config.normalize else arr


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise TypeError("expected a list of strings, not a single string")
    if len(texts) == 0:
        raise ValueError("expected at least one text")
