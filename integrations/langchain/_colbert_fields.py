"""The ColBERT encoder settings of the LangChain classes, declared once for the retriever
and the compressor."""

from __future__ import annotations

from typing import Any

from pydantic import PrivateAttr

from .. import _colbert
from ._base import EngineFields


class ColBERTFields(_colbert.ColBERTSettings, EngineFields):
    """Engine fields plus the ColBERT encoder settings (``vllm_pool.retrievers.ColBERTConfig``).

    A setting left at ``None`` takes the checkpoint's value (colbert-ai ``artifact.metadata``,
    PyLate's config), else the plain default.
    """

    query_maxlen: int | None = None
    """Query length in tokens (padded to it with ``mask_augment``); default: the checkpoint's,
    32 with query expansion, else the model's limit."""
    doc_maxlen: int | None = None
    """Maximum document (window) length in tokens; default 180; capped at the model's limit."""
    query_marker: str | None = None
    """Token put after ``[CLS]`` in queries (colbert-ai: ``"[unused0]"``, PyLate: ``"[Q] "``)."""
    doc_marker: str | None = None
    """Token put after ``[CLS]`` in documents (colbert-ai: ``"[unused1]"``, PyLate: ``"[D] "``)."""
    mask_augment: bool | None = None
    """Pad queries with ``[MASK]`` to ``query_maxlen`` (ColBERT checkpoints: on; plain models: off)."""
    attend_to_expansion_tokens: bool | None = None
    """Let the model attend to the ``[MASK]`` tokens (colbert-ai / PyLate default: off)."""
    skip_punctuation: bool | None = None
    """Drop punctuation (skiplist) token vectors from documents (default: on)."""
    skiplist_words: list[str] | None = None
    """Tokens to skip in documents (PyLate's ``skiplist_words``; default: punctuation)."""
    normalize: bool | None = None
    """L2-normalize the token vectors (default: on)."""
    # -- long documents ---------------------------------------------------------------
    split_long_documents: bool = False
    """Index documents longer than ``doc_maxlen`` as overlapping windows under their id (hits
    merged per document); else they are cut, with a warning."""
    window_overlap: int = 32
    """Tokens shared by consecutive windows of a long document."""

    _config: Any = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._resolve_colbert(_colbert.capped_encoder_settings(self))  # lengths cut to the model's
