"""ColBERT encoding conventions on top of any :class:`~.encoders.TokenEncoder`.

Queries: ``[CLS] [Q]? tokens [SEP]``, cut to ``query_maxlen`` (with a warning); with ``mask_augment`` padded
with ``[MASK]`` (else EOS, else the pad token, as PyLate) to ``query_maxlen`` (query
expansion), attended to or not (``attend_to_expansion_tokens``), every position's vector
returned. Documents: ``[CLS] [D]? tokens [SEP]``, cut to ``doc_maxlen`` (or split into
overlapping windows of ``doc_maxlen``), with the vectors of skiplist (punctuation) tokens
dropped.

A marker sits right after the first special token: colbert-ai tokenizes ``". " + text`` and
overwrites the ``.`` with the marker, PyLate inserts its prefix token there; for WordPiece
tokenizers both give these ids. Settings come from :class:`~.colbert_config.ColBERTConfig`;
without one, from the model's checkpoint (the encoder's ``colbert_settings``), else the
plain defaults (no markers, no expansion).

A model whose token vectors skip the first token (BGE-M3's ColBERT head returns ``L - 1``
vectors) is recognized by the count and aligned with the tokens after the first.
"""

from __future__ import annotations

import logging
import string
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from vllm_pool.engine.inputs import check_unicode

from .arrays import l2_normalize
from .colbert_config import ColBERTConfig
from .encoders import TokenEncoder

logger = logging.getLogger(__name__)

__all__ = ["ColBERTConfig", "ColBERTEncoder"]


class ColBERTEncoder:
    """Encodes queries and documents into ColBERT token vectors.

    Args:
        encoder: a :class:`~.encoders.TokenEncoder` (e.g. ``EngineTokenEncoder(llm)``).
        config: the conventions; default: the checkpoint's settings (``encoder.colbert_settings``)
            or :class:`ColBERTConfig()`.

    Raises:
        ValueError: a marker that is not a token of the tokenizer, a length over the
            encoder's ``max_length``, or ``mask_augment`` with no mask, EOS or pad token.
    """

    def __init__(self, encoder: TokenEncoder, config: ColBERTConfig | None = None) -> None:
        self.encoder = encoder
        self.config = config = config if config is not None else self.default_config(encoder)
        self.tokenizer = encoder.tokenizer
        # the engine's tokenizer is shared and each call sets its truncation: its lock, if any
        self._tokenizer_lock = getattr(encoder, "tokenizer_lock", None) or threading.RLock()
        self.model_name = getattr(encoder, "model_name", None)
        limit = getattr(encoder, "max_length", None)
        for name in ("query_maxlen", "doc_maxlen"):
            if limit is not None and getattr(config, name) > limit:
                raise ValueError(
                    f"{name}={getattr(config, name)} is larger than the model's limit of {limit} tokens"
                )
        self.query_marker_id = self._marker_id(config.query_marker)
        self.doc_marker_id = self._marker_id(config.doc_marker)
        self.mask_id = self._expansion_id() if config.mask_augment else self.tokenizer.mask_token_id
        self.skiplist = self._skiplist() if config.skip_punctuation else set()
        self._template = self._special_template()
        self._specials = len(self._template[0]) + len(self._template[1])

    @staticmethod
    def default_config(encoder: TokenEncoder, **overrides: Any) -> ColBERTConfig:
        """The checkpoint's settings (``encoder.colbert_settings``), then ``overrides`` (``None``
        values ignored); lengths not given are capped at the encoder's ``max_length``.

        Without query expansion and with no ``query_maxlen`` from the checkpoint or the
        overrides (BGE-M3, a plain embedding model), queries may use the model's whole
        ``max_length``, as FlagEmbedding encodes them; a colbert-ai / PyLate checkpoint's
        length, or expansion (``[MASK]`` padding to a fixed length), keeps ColBERT's 32.

        Raises:
            TypeError: an unknown setting name.
        """
        settings = dict(getattr(encoder, "colbert_settings", None) or {})
        limit = getattr(encoder, "max_length", None)
        defaults = ColBERTConfig()
        expansion = overrides.get("mask_augment")
        expansion = settings.get("mask_augment", defaults.mask_augment) if expansion is None else expansion
        if limit is not None and not expansion and "query_maxlen" not in settings:
            settings["query_maxlen"] = limit
        for name in ("query_maxlen", "doc_maxlen"):
            value = settings.get(name, getattr(defaults, name))
            if limit is not None and overrides.get(name) is None and value > limit:
                settings[name] = limit
        return ColBERTConfig.from_settings(settings, **overrides)

    @classmethod
    def from_llm(cls, llm: Any, config: ColBERTConfig | None = None) -> ColBERTEncoder:
        """Wrap a ``vllm_pool.LLM`` (token_embed) with :class:`~.encoders.EngineTokenEncoder`."""
        from .encoders import EngineTokenEncoder

        return cls(EngineTokenEncoder(llm), config)

    def _marker_id(self, token: str | None) -> int | None:
        if token is None or token == "":  # PyLate: an empty prefix is no prefix token
            return None
        ids = self.tokenizer.convert_tokens_to_ids([token])
        unk = self.tokenizer.unk_token_id
        if not ids or ids[0] is None or (ids[0] == unk and token != self.tokenizer.unk_token):
            raise ValueError(f"marker {token!r} is not a token of this tokenizer")
        return int(ids[0])

    def _expansion_id(self) -> int:
        """The query expansion token, as PyLate picks it: ``[MASK]``, else EOS (decoder
        models), else the pad token.

        Raises:
            ValueError: the tokenizer has none of the three.
        """
        tok = self.tokenizer
        for name in ("mask_token_id", "eos_token_id", "pad_token_id"):
            token_id = getattr(tok, name, None)
            if token_id is not None:
                if name != "mask_token_id":
                    logger.warning(
                        "tokenizer has no mask token; query expansion pads with the %s (id %d)",
                        name.replace("_token_id", " token").replace("eos", "EOS"),
                        token_id,
                    )
                return int(token_id)
        raise ValueError(
            "mask_augment=True needs a mask, EOS or pad token for query expansion; this tokenizer has none"
        )

    def _skiplist(self) -> set[int]:
        """The skipped ids, as the references compute them: an unknown symbol maps to the
        unknown token, so both drop ``[UNK]`` vectors too."""
        words = self.config.skiplist_words
        if words is not None:  # PyLate: the ids of the listed tokens
            return {int(i) for i in self.tokenizer.convert_tokens_to_ids(list(words)) if i is not None}
        ids = set()  # colbert-ai: the first word piece of each punctuation symbol
        for ch in string.punctuation:
            pieces = self.text_token_ids(ch)
            if pieces:
                ids.add(int(pieces[0]))
        return ids

    # -- token ids -----------------------------------------------------------------------
    def _content(self, text: str, what: str, i: int) -> list[int]:
        """The token ids of ``text`` without special tokens, uncut."""
        if not isinstance(text, str):
            raise TypeError(f"{what}[{i}]: expected a string, got {type(text).__name__}")
        if what == "queries" and not text.strip():  # a blank document is [CLS] [D] [SEP], as in PyLate
            raise ValueError(f"{what}[{i}] is empty: it has no tokens to encode")
        check_unicode(text, f"{what}[{i}]")  # not the tokenizer's unrelated TextEncodeInput error
        return self.text_token_ids(text)

    def text_token_ids(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """The tokenizer's ids of ``text``, uncut, under the tokenizer's lock (another thread's
        call, such as the engine's, would change its truncation in the middle of this one)."""
        with self._tokenizer_lock:
            encoded = self.tokenizer(text, add_special_tokens=add_special_tokens, verbose=False)
        return list(encoded["input_ids"])

    def _special_template(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts before and after a text (``[CLS]`` / ``[SEP]``,
        ``<s>`` / ``</s>``...), read off one probe text."""
        probe = "a b"
        plain, full = self.text_token_ids(probe), self.text_token_ids(probe, add_special_tokens=True)
        for start in range(len(full) - len(plain) + 1):
            if full[start : start + len(plain)] == plain:
                return full[:start], full[start + len(plain) :]
        raise ValueError("cannot find the text inside the tokenizer's special-token template")

    def _wrap(self, content: list[int], marker: int | None) -> list[int]:
        """Special tokens around ``content`` and the marker after the first one."""
        head, tail = self._template
        ids = [*head, *content, *tail]
        if marker is not None:
            ids.insert(1, marker)
        return ids

    def _budget(self, maxlen: int, marker: int | None) -> int:
        budget = maxlen - self._specials - (marker is not None)
        if budget < 1:
            raise ValueError(f"a length of {maxlen} tokens leaves no room for text")
        return budget

    def query_inputs(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
        """Query token ids and their attention masks (0 on unattended ``[MASK]`` tokens).

        Queries longer than ``query_maxlen`` are cut, with one warning per call naming how many.
        """
        _check_texts(texts, "queries")
        cfg = self.config
        budget = self._budget(cfg.query_maxlen, self.query_marker_id)
        ids_out, masks, cut = [], [], 0
        for i, text in enumerate(texts):
            content = self._content(text, "queries", i)
            cut += len(content) > budget
            ids = self._wrap(content[:budget], self.query_marker_id)
            pad = cfg.query_maxlen - len(ids) if cfg.mask_augment else 0
            ids_out.append(ids + [self.mask_id] * pad)
            masks.append([1] * len(ids) + [int(cfg.attend_to_expansion_tokens)] * pad)
        if cut:
            logger.warning(
                "%d of %d queries are longer than query_maxlen=%d tokens and were cut",
                cut,
                len(ids_out),
                cfg.query_maxlen,
            )
        return ids_out, masks

    def query_token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """``[CLS] [Q]? tokens [SEP] [MASK]*`` ids, ``query_maxlen`` long with augmentation."""
        return self.query_inputs(texts)[0]

    def document_windows(
        self, texts: Sequence[str], overlap: int | None = None
    ) -> tuple[list[int], list[list[int]], int]:
        """Document token ids: one cut sequence per text, or overlapping windows.

        Args:
            texts: the documents.
            overlap: ``None``: cut each document to ``doc_maxlen``. An int: split documents
                longer than ``doc_maxlen`` into windows of ``doc_maxlen`` tokens whose text
                parts overlap by ``overlap`` tokens.

        Returns:
            ``(parents, ids, cut)``: the index of the text each sequence comes from, the
            sequences, and how many texts were longer than ``doc_maxlen``.
        """
        _check_texts(texts, "documents")
        budget = self._budget(self.config.doc_maxlen, self.doc_marker_id)
        if overlap is not None and not 0 <= overlap < budget:
            raise ValueError(
                f"window overlap must be in [0, {budget}) tokens for doc_maxlen={self.config.doc_maxlen}, "
                f"got {overlap}"
            )
        parents, out, cut = [], [], 0
        for i, text in enumerate(texts):
            content = self._content(text, "documents", i)
            cut += len(content) > budget
            step = budget if overlap is None else budget - overlap
            starts = [0] if overlap is None else range(0, max(len(content) - overlap, 1), step)
            for start in starts:
                parents.append(i)
                out.append(self._wrap(content[start : start + budget], self.doc_marker_id))
        return parents, out, cut

    def document_token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """``[CLS] [D]? tokens [SEP]`` ids, at most ``doc_maxlen`` long."""
        return self.document_windows(texts)[1]

    # -- vectors -------------------------------------------------------------------------
    def encode_queries(self, texts: Sequence[str]) -> list[np.ndarray]:
        """One ``float32 [L, D]`` matrix per query (``query_maxlen`` rows with augmentation)."""
        ids, masks = self.query_inputs(texts)
        return [self._post(v) for v in self._encode(ids, masks)]

    def encode_documents(self, texts: Sequence[str]) -> list[np.ndarray]:
        """One ``float32 [L, D]`` matrix per document, skiplist tokens removed.

        Documents longer than ``doc_maxlen`` are cut, with one warning per call naming how
        many (see :meth:`encode_document_windows` to keep their ends).
        """
        _, ids, cut = self.document_windows(texts)
        if cut:
            logger.warning(
                "%d of %d documents are longer than doc_maxlen=%d tokens and were cut; "
                "use split_long_documents=True to index them whole",
                cut,
                len(ids),
                self.config.doc_maxlen,
            )
        return self._document_vectors(ids)

    def encode_document_windows(
        self, texts: Sequence[str], overlap: int = 32
    ) -> tuple[list[int], list[np.ndarray]]:
        """Split long documents into windows of ``doc_maxlen`` overlapping by ``overlap`` tokens.

        Returns:
            ``(parents, vectors)``: for each window, the index of its text and its
            ``float32 [L, D]`` vectors (one window for a text that fits).
        """
        parents, ids, _ = self.document_windows(texts, overlap)
        return parents, self._document_vectors(ids)

    def _document_vectors(self, ids: list[list[int]]) -> list[np.ndarray]:
        out = []
        for tok_ids, vecs in zip(ids, self._encode(ids, None), strict=True):
            vecs = np.asarray(vecs)
            if len(vecs) == len(tok_ids) - 1:  # a model without a vector for the first token
                tok_ids = tok_ids[1:]
            if len(vecs) != len(tok_ids):
                raise ValueError(f"encoder returned {len(vecs)} vectors for {len(tok_ids)} tokens")
            keep = np.asarray([t not in self.skiplist for t in tok_ids], dtype=bool)
            out.append(self._post(vecs[keep]))
        return out

    def _encode(self, ids: list[list[int]], masks: list[list[int]] | None) -> list[Any]:
        if masks is None or all(all(m) for m in masks):
            return self.encoder.encode_token_ids(ids)
        try:
            return self.encoder.encode_token_ids(ids, attention_masks=masks)
        except TypeError as e:
            if "attention_masks" not in str(e):
                raise
            raise TypeError(
                f"{type(self.encoder).__name__}.encode_token_ids does not take attention_masks, which "
                "attend_to_expansion_tokens=False needs (set it to True, or mask_augment=False)"
            ) from e

    def _post(self, vecs: Any) -> np.ndarray:
        arr = np.asarray(vecs, dtype=np.float32)
        return l2_normalize(arr) if self.config.normalize else arr


def _check_texts(texts: Sequence[str], what: str) -> None:
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a list of strings, not a single string")
    if len(texts) == 0:
        raise ValueError(f"expected at least one text in {what}")


def check_texts(texts: Sequence[str], what: str = "documents") -> None:
    """Raise ``TypeError`` / ``ValueError`` naming the first text that is not a string (or,
    for queries, a blank one; a blank document is encoded as its special tokens, as PyLate
    does). Run it before encoding in batches, so positions are the caller's."""
    _check_texts(texts, what)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{i}]: expected a string, got {type(text).__name__}")
        if what == "queries" and not text.strip():
            raise ValueError(f"{what}[{i}] is empty: it has no tokens to encode")
        check_unicode(text, f"{what}[{i}]")
