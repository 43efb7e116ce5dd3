"""`ColBERTConfig`: how a ColBERT encoder turns queries and documents into token ids.

The defaults are those of a plain token-embedding model (e.g. all-MiniLM-L6-v2): no
markers, no ``[MASK]`` query expansion. ColBERT checkpoints bring their own settings
(colbert-ai ``artifact.metadata``, PyLate ``config_sentence_transformers.json``), read by
the engine; :meth:`ColBERTConfig.from_settings` builds a config from such a dict plus the
user's overrides, rejecting unknown names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class ColBERTConfig:
    """How queries and documents are turned into token ids.

    Attributes:
        query_maxlen: query length in tokens, special tokens included (the padded length with
            ``mask_augment``; ColBERT: 32).
        doc_maxlen: maximum document (or window) length in tokens, special tokens included.
        query_marker: token put after the first special token of queries (colbert-ai:
            ``"[unused0]"``; PyLate: ``"[Q] "``), or ``None``.
        doc_marker: token put after the first special token of documents (colbert-ai:
            ``"[unused1]"``; PyLate: ``"[D] "``), or ``None``.
        mask_augment: pad queries with ``[MASK]`` up to ``query_maxlen`` (query expansion;
            colbert-ai / PyLate models are trained with it, plain embedding models are not).
        attend_to_expansion_tokens: let the model attend to the ``[MASK]`` tokens. ``False``
            (colbert-ai and PyLate's default): attention mask 0 on them, yet each still gets
            a vector.
        skip_punctuation: drop the vectors of skiplist tokens from documents.
        skiplist_words: the tokens to skip (PyLate's ``skiplist_words``); ``None``: every
            ``string.punctuation`` symbol and its first word piece (colbert-ai).
        normalize: L2-normalize the vectors the encoder returns.
    """

    query_maxlen: int = 32
    doc_maxlen: int = 180
    query_marker: str | None = None
    doc_marker: str | None = None
    mask_augment: bool = False
    attend_to_expansion_tokens: bool = False
    skip_punctuation: bool = True
    skiplist_words: tuple[str, ...] | None = None
    normalize: bool = True

    @classmethod
    def colbert_v2(cls) -> ColBERTConfig:
        """colbert-ai's settings: ``[unused0]`` / ``[unused1]`` markers, unattended ``[MASK]``
        query expansion to 32 tokens, documents up to 220 tokens."""
        return cls(doc_maxlen=220, query_marker="[unused0]", doc_marker="[unused1]", mask_augment=True)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None = None, **overrides: Any) -> ColBERTConfig:
        """A config from a checkpoint's settings, then ``overrides`` (``None`` values ignored).

        Raises:
            TypeError: a name that is not a setting.
        """
        merged = dict(settings or {})
        merged.update({key: value for key, value in overrides.items() if value is not None})
        unknown = sorted(set(merged) - set(cls.field_names()))
        if unknown:
            raise TypeError(f"unknown ColBERT setting(s) {unknown}; the settings: {list(cls.field_names())}")
        if merged.get("skiplist_words") is not None:
            merged["skiplist_words"] = tuple(merged["skiplist_words"])
        return cls(**merged)

    def to_settings(self) -> dict[str, Any]:
        """The JSON form (what a saved index or retriever records)."""
        d = asdict(self)
        if d["skiplist_words"] is not None:
            d["skiplist_words"] = list(d["skiplist_words"])
        return d

    def conflicts(self, settings: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
        """``{name: (saved, this)}`` for every setting of ``settings`` that differs from this one."""
        mine = self.to_settings()
        return {k: (v, mine[k]) for k, v in settings.items() if k in mine and v != mine[k]}

    def __post_init__(self) -> None:
        for name in ("query_maxlen", "doc_maxlen"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
        if self.query_maxlen < 3 or self.doc_maxlen < 3:
            raise ValueError("query_maxlen and doc_maxlen must be at least 3")
        for name in ("mask_augment", "attend_to_expansion_tokens", "skip_punctuation", "normalize"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("query_marker", "doc_marker"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a token string or None, got {type(value).__name__}")
