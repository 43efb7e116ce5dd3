"""The ColBERT plumbing both frameworks' retrievers share (over ``vllm_pool.retrievers``).

Encoder settings are the fields of :class:`~vllm_pool.retrievers.ColBERTConfig`
(:data:`ENCODER_SETTINGS`); a retriever field left at ``None`` takes the checkpoint's value
(colbert-ai ``artifact.metadata``, PyLate's config), else the plain default (no ``[MASK]``
expansion). A saved retriever is a folder (:mod:`._colbert_folder`, written all or nothing,
no pickle): ``index/`` (a :class:`~vllm_pool.retrievers.MultiVectorIndex` folder) and
``colbert.json`` (model id, dimension, encoder settings, long-document settings,
``truncate``); loading it with a conflicting setting raises.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from vllm_pool.engine.inputs import check_unicode

from ._colbert_folder import INDEX_DIR, SETTINGS_FILE, SETTINGS_VERSION, load, save  # noqa: F401 (the classes' API)
from ._engines import EngineOptions, get_engine, on_clear
from ._hf_names import capped_colbert_lengths
from ._progress import CallProgress
from ._records import TEXT_KEY, new_records, unpack, user_filter

logger = logging.getLogger(__name__)

ENCODER_SETTINGS = (
    "query_maxlen",
    "doc_maxlen",
    "query_marker",
    "doc_marker",
    "mask_augment",
    "attend_to_expansion_tokens",
    "skip_punctuation",
    "skiplist_words",
    "normalize",
)
"""The encoder settings both frameworks' retrievers expose (``ColBERTConfig``'s fields)."""

_encoders: dict[tuple[EngineOptions, Any], Any] = {}
_encoders_lock = threading.Lock()


def _clear_encoders() -> None:
    with _encoders_lock:
        _encoders.clear()


on_clear(_clear_encoders)  # clear_engine_cache drops the encoders holding the old engines


def resolve_config(options: EngineOptions, overrides: Mapping[str, Any]) -> Any:
    """The ``ColBERTConfig`` of an engine: its checkpoint's settings, then ``overrides``
    (``None`` values ignored).

    Raises:
        TypeError: a name that is not an encoder setting.
    """
    from vllm_pool.retrievers import ColBERTEncoder, EngineTokenEncoder

    unknown = sorted(set(overrides) - set(ENCODER_SETTINGS))
    if unknown:
        raise TypeError(f"unknown ColBERT settings {unknown}; the settings are {list(ENCODER_SETTINGS)}")
    return ColBERTEncoder.default_config(EngineTokenEncoder(get_engine(options)), **overrides)


class ColBERTSettings:
    """The resolved ``ColBERTConfig`` and the shared encoder of a framework class (both
    frameworks' ColBERT retrievers and rerankers): the class holds its engine reference in
    ``_engine`` and calls :meth:`_resolve_colbert` once its settings are known."""

    def _resolve_colbert(self, settings: Mapping[str, Any]) -> None:
        self._config = resolve_config(self._engine.options, settings)  # type: ignore[attr-defined]

    @property
    def colbert_config(self) -> Any:
        """The resolved ``ColBERTConfig`` (checkpoint settings, then the given ones)."""
        return self._config  # type: ignore[attr-defined]

    @property
    def encoder(self) -> Any:
        """The shared ``ColBERTEncoder`` of this model and these settings."""
        return get_encoder(self._engine.options, self._config)  # type: ignore[attr-defined]


def get_encoder(options: EngineOptions, config: Any) -> Any:
    """The shared :class:`~vllm_pool.retrievers.ColBERTEncoder` of an engine and config."""
    key = (options, config)
    encoder = _encoders.get(key)
    if encoder is None:
        from vllm_pool.retrievers import ColBERTEncoder

        with _encoders_lock:
            encoder = _encoders.get(key)
            if encoder is None:
                encoder = ColBERTEncoder.from_llm(get_engine(options), config)
                _encoders[key] = encoder
    return encoder


def new_index(llm: Any, index_kwargs: Mapping[str, Any] | None = None) -> Any:
    """An empty :class:`~vllm_pool.retrievers.MultiVectorIndex` for the engine's vectors."""
    from vllm_pool.retrievers import MultiVectorIndex

    kwargs = dict(index_kwargs or {})
    kwargs.setdefault("model_name", llm.model_name)
    return MultiVectorIndex(llm.embedding_dim, **kwargs)


def add_texts(
    index: Any,
    encoder: Any,
    texts: Sequence[str],
    metadatas: Sequence[Mapping[str, Any] | None] | None = None,
    ids: Sequence[str | None] | None = None,
    batch_size: int = 64,
    show_progress: bool = False,
    encode_texts: Sequence[str] | None = None,
    split_long_documents: bool = False,
    window_overlap: int = 32,
    truncate: bool = True,
) -> list[str]:
    """Encode ``texts`` as ColBERT documents and add them (an existing id is overwritten).

    Args:
        index: a ``MultiVectorIndex``.
        encoder: a ``ColBERTEncoder``.
        texts: the documents.
        metadatas: one dict (or ``None``) per text.
        ids: one id (or ``None`` for a new UUID) per text.
        batch_size: texts per encoder call.
        show_progress: show a progress bar.
        encode_texts: what to encode for each document when it differs from the stored
            text (e.g. a LlamaIndex node's text with its metadata).
        split_long_documents: index documents longer than ``doc_maxlen`` as overlapping
            windows under their id (else they are cut, with a warning).
        window_overlap: tokens shared by consecutive windows.
        truncate: cut documents over ``doc_maxlen`` (else, without ``split_long_documents``,
            such a document is an error, raised before anything is encoded).

    Returns:
        The ids, in order.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not a single string")
    texts, ids, metas = new_records(texts, metadatas, ids)
    if not texts:
        return []
    to_encode = texts if encode_texts is None else list(encode_texts)
    if len(to_encode) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(to_encode)} texts to encode")
    from vllm_pool.retrievers import long_documents
    from vllm_pool.retrievers.colbert import check_texts

    check_texts(to_encode)  # positions in the caller's list, before any batch is encoded
    if not truncate and not split_long_documents:
        check_document_lengths(encoder, to_encode)
    vectors: list[Any] = []
    win_ids, win_metas = list(ids), list(metas)
    if split_long_documents:
        win_ids, win_metas = [], []
    with CallProgress(len(texts), "ColBERT encoding", show_progress, unit="doc") as progress:
        for start in range(0, len(texts), batch_size):
            end = start + batch_size
            if split_long_documents:
                batch = (to_encode[start:end], ids[start:end], metas[start:end])
                v, i, m = long_documents.windows(encoder, *batch, window_overlap, [TEXT_KEY])
                vectors += v
                win_ids += i
                win_metas += m
            else:
                vectors += encoder.encode_documents(to_encode[start:end])
            progress.update(len(to_encode[start:end]))
    long_documents.replace(index, ids, vectors, win_ids, win_metas)  # all encoded: now change the index
    return ids


def search(
    index: Any, encoder: Any, query: str, k: int, filter: Any = None
) -> list[tuple[str, str, dict[str, Any], float]]:
    """MaxSim search for one query: ``(id, text, metadata, score)`` tuples, best first."""
    if not isinstance(query, str):
        raise TypeError(f"query must be a string, got {type(query).__name__}")
    check_unicode(query, "query")
    from vllm_pool.retrievers import long_documents

    flt = user_filter(filter)  # checked even when the index is empty
    if len(index) == 0:
        return []
    q = encoder.encode_queries([query])
    hits = long_documents.search(index, q, k=k, filter=flt)[0]
    out = []
    for hit in hits:
        text, meta = unpack(hit.metadata)
        out.append((hit.id, text, meta, hit.score))
    return out


def check_document_lengths(encoder: Any, texts: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the first document longer than ``doc_maxlen`` tokens (the
    ``truncate=False`` setting: no document is cut silently)."""
    limit = encoder.config.doc_maxlen
    for i, text in enumerate(texts):
        _, _, cut = encoder.document_windows([text])
        if cut:
            n = len(encoder.text_token_ids(text, add_special_tokens=True))
            n += encoder.doc_marker_id is not None
            raise ValueError(
                f"documents[{i}] has {n} tokens, more than doc_maxlen={limit}; set truncate=True to cut "
                "it or split_long_documents=True to index it as windows"
            )


def rerank(
    encoder: Any,
    query: str,
    texts: Sequence[str],
    top_n: int | None,
    split_long_documents: bool = False,
    window_overlap: int = 32,
    batch_size: int = 64,
    truncate: bool = True,
) -> list[tuple[int, float]]:
    """``(index, MaxSim score)`` of ``texts`` against ``query``, best first (``top_n`` of them);
    ``truncate=False`` without ``split_long_documents``: a text over ``doc_maxlen`` is an error."""
    from vllm_pool.retrievers import rerank as colbert_rerank

    if not truncate and not split_long_documents:
        check_document_lengths(encoder, texts)

    return colbert_rerank(
        query,
        list(texts),
        top_n,
        encoder=encoder,
        split_long_documents=split_long_documents,
        window_overlap=window_overlap,
        batch_size=batch_size,
    )


def get(index: Any, ids: Sequence[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """Stored documents ``(id, text, metadata)`` for the ids present."""
    from vllm_pool.retrievers import long_documents

    return [(r.id, *unpack(r.metadata)) for r in long_documents.get(index, list(ids))]


def delete(index: Any, ids: Sequence[str]) -> int:
    """Remove documents (all their windows) by id; missing ids are ignored."""
    from vllm_pool.retrievers import long_documents

    return long_documents.remove(index, list(ids))


def retriever_settings(
    model: str,
    dim: int,
    config: Any,
    split_long_documents: bool,
    window_overlap: int,
    truncate: bool | None = None,
) -> dict[str, Any]:
    """What :func:`save` records about a retriever (``truncate`` when given)."""
    settings = {
        "model": model,
        "embedding_dim": dim,
        "colbert": config.to_settings(),
        "split_long_documents": split_long_documents,
        "window_overlap": window_overlap,
    }
    if truncate is not None:
        settings["truncate"] = bool(truncate)
    return settings


def settings_of(retriever: Any) -> dict[str, Any]:
    """:func:`retriever_settings` of a LangChain or LlamaIndex ColBERT retriever."""
    return retriever_settings(
        retriever.model,
        retriever.index.dim,
        retriever._config,
        retriever.split_long_documents,
        retriever.window_overlap,
        truncate=retriever.truncate,
    )


def capped_encoder_settings(owner: Any) -> dict[str, Any]:
    """``owner``'s encoder settings (:data:`ENCODER_SETTINGS` attributes), with a length over
    the model's limit cut to it, on ``owner`` too (one warning: ``capped_colbert_lengths``)."""
    settings = {name: getattr(owner, name) for name in ENCODER_SETTINGS}
    for name, value in capped_colbert_lengths(owner.llm, settings, type(owner).__name__).items():
        if value != settings[name]:
            setattr(owner, name, value)
            settings[name] = value
    return settings


def load_arguments(path: str | os.PathLike, given: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The index and the constructor arguments of a retriever saved at ``path``.

    ``given`` are the caller's arguments: they override the saved ones, except the model
    and the encoder settings, which must agree with what the index was built with; a given
    ``index_kwargs`` applies to the loaded index (see :func:`._colbert_folder.load`).

    Raises:
        ValueError: a given model or encoder setting that differs from the saved one, or an
            ``index_kwargs`` build option that differs from the saved index's.
        TypeError: an unknown ``index_kwargs`` name.
    """
    index, settings = load(path, given.get("index_kwargs"))
    saved = dict(settings["colbert"])
    conflicts = {
        name: (saved[name], value)
        for name, value in given.items()
        if name in saved and value is not None and _jsonable(value) != saved[name]
    }
    if given.get("model") not in (None, settings["model"]):
        conflicts["model"] = (settings["model"], given["model"])
    if conflicts:
        detail = ", ".join(f"{k}: saved {a!r}, given {b!r}" for k, (a, b) in sorted(conflicts.items()))
        raise ValueError(
            f"{path} was built with other settings ({detail}); its vectors only match the saved "
            "settings: load it without these arguments, or build a new index"
        )
    args = {
        "model": settings["model"],
        **saved,
        "split_long_documents": settings.get("split_long_documents", False),
        "window_overlap": settings.get("window_overlap", 32),
    }
    if "truncate" in settings:
        args["truncate"] = settings["truncate"]
    args.update({k: v for k, v in given.items() if v is not None or k not in args})
    return index, args


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
