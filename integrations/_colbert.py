"""The ColBERT plumbing both frameworks' retrievers share (over ``vllm_pool.retrievers``).

A saved retriever is a folder: ``index/`` (a :class:`~vllm_pool.retrievers.MultiVectorIndex`
folder, written atomically, no pickle) and ``colbert.json`` (the encoding conventions and
the model id).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ._engines import EngineOptions, get_engine, on_clear
from ._records import new_records, unpack, user_filter

logger = logging.getLogger(__name__)

SETTINGS_FILE = "colbert.json"
INDEX_DIR = "index"
SETTINGS_VERSION = 1

_encoders: dict[tuple[EngineOptions, Any], Any] = {}
_encoders_lock = threading.Lock()


def _clear_encoders() -> None:
    with _encoders_lock:
        _encoders.clear()


on_clear(_clear_encoders)  # clear_engine_cache drops the encoders holding the old engines


def colbert_config(
    query_maxlen: int = 32,
    doc_maxlen: int = 180,
    query_marker: str | None = None,
    doc_marker: str | None = None,
) -> Any:
    """A :class:`~vllm_pool.retrievers.ColBERTConfig` from the retrievers' fields."""
    from vllm_pool.retrievers import ColBERTConfig

    return ColBERTConfig(
        query_maxlen=query_maxlen, doc_maxlen=doc_maxlen, query_marker=query_marker, doc_marker=doc_marker
    )


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

    Returns:
        The ids, in order.
    """
    from tqdm.auto import tqdm

    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not a single string")
    texts, ids, metas = new_records(texts, metadatas, ids)
    if not texts:
        return []
    to_encode = texts if encode_texts is None else list(encode_texts)
    if len(to_encode) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(to_encode)} texts to encode")
    vectors: list[Any] = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="ColBERT encoding", unit="batch", disable=not show_progress):
        vectors.extend(encoder.encode_documents(to_encode[start : start + batch_size]))
    index.add(vectors, ids, metas)
    return ids


def search(
    index: Any, encoder: Any, query: str, k: int, filter: Any = None
) -> list[tuple[str, str, dict[str, Any], float]]:
    """MaxSim search for one query: ``(id, text, metadata, score)`` tuples, best first."""
    if not isinstance(query, str):
        raise TypeError(f"query must be a string, got {type(query).__name__}")
    if len(index) == 0:
        return []
    q = encoder.encode_queries([query])
    hits = index.search(q, k=k, filter=user_filter(filter))[0]
    out = []
    for hit in hits:
        text, meta = unpack(hit.metadata)
        out.append((hit.id, text, meta, hit.score))
    return out


def get(index: Any, ids: Sequence[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """Stored documents ``(id, text, metadata)`` for the ids present."""
    return [(r.id, *unpack(r.metadata)) for r in index.get(list(ids))]


def save(path: str | os.PathLike, index: Any, settings: Mapping[str, Any]) -> None:
    """Write ``settings`` to ``colbert.json`` and the index to ``index/`` under ``path``."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"format_version": SETTINGS_VERSION, **settings}
    tmp = folder / f".{SETTINGS_FILE}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, folder / SETTINGS_FILE)
    index.save(folder / INDEX_DIR)


def load(path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """Read a folder written by :func:`save`: ``(MultiVectorIndex, settings)``.

    Raises:
        vllm_pool.retrievers.IndexFormatError: a missing or unreadable file.
    """
    from vllm_pool.retrievers import IndexFormatError, MultiVectorIndex

    folder = Path(path)
    settings_path = folder / SETTINGS_FILE
    try:
        settings = json.loads(settings_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{settings_path}: cannot read ColBERT retriever settings ({exc})") from exc
    if not isinstance(settings, dict) or settings.pop("format_version", None) != SETTINGS_VERSION:
        raise IndexFormatError(
            f"{settings_path}: unknown format (expected format_version {SETTINGS_VERSION})"
        )
    return MultiVectorIndex.load(folder / INDEX_DIR), settings


def config_settings(config: Any) -> dict[str, Any]:
    """The JSON form of a ``ColBERTConfig`` (the fields the retrievers expose)."""
    d = asdict(config)
    return {key: d[key] for key in ("query_maxlen", "doc_maxlen", "query_marker", "doc_marker")}
