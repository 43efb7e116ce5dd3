"""The folder of a saved ColBERT retriever (both frameworks), written all or nothing.

Layout (the versioned folder of :mod:`vllm_pool.retrievers.index_folder`)::

    path/CURRENT                  one line: the live version
    path/v-000003-1f2e3d4c/       index/ (a MultiVectorIndex folder) and colbert.json

A save writes the index, then ``colbert.json``, into a new version and switches ``CURRENT``
in one atomic step, so a failed or killed save leaves the previous retriever whole: never
new encoder settings next to old vectors. A folder of the older flat layout (``colbert.json``
and ``index/`` at its top) is still read, and is replaced by the next save.

``colbert.json`` holds ``model``, ``embedding_dim``, ``colbert`` (the encoder settings),
``split_long_documents``, ``window_overlap`` and ``truncate`` (format version 2; version 1
had four encoder settings at its top and always expanded queries with ``[MASK]``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SETTINGS_FILE = "colbert.json"
INDEX_DIR = "index"
SETTINGS_VERSION = 2
_V1_KEYS = ("query_maxlen", "doc_maxlen", "query_marker", "doc_marker")
LOAD_OPTIONS = ("use_gpu", "device")
"""``index_kwargs`` given to ``MultiVectorIndex.load`` when a retriever is loaded."""
SEARCH_SETTINGS = (
    "candidates_per_token",
    "exact_filter_limit",
    "ncells",
    "ndocs",
    "centroid_score_threshold",
    "nprobe",
    "ef_search",
)
"""``index_kwargs`` that a loaded index takes for its searches; the others (``index_type``,
``storage``, ``nbits``...) are how the index was built and must agree with the saved ones."""


def save(path: str | os.PathLike, index: Any, settings: Mapping[str, Any]) -> None:
    """Write the index and ``settings`` as a new version of the folder ``path``, switched to
    atomically (the index is written first, ``colbert.json`` last)."""
    from vllm_pool.retrievers.index_folder import fsync_path, write_version

    text = json.dumps({"format_version": SETTINGS_VERSION, **settings}, indent=2, allow_nan=False)

    def write(folder: Path) -> None:
        index.save(folder / INDEX_DIR)
        (folder / SETTINGS_FILE).write_text(text, encoding="utf-8")
        fsync_path(folder / SETTINGS_FILE)

    write_version(path, write)
    _drop_flat_layout(Path(path))


def _drop_flat_layout(folder: Path) -> None:
    """Remove the ``colbert.json`` and ``index/`` of the older flat layout once a version is live."""
    from vllm_pool.retrievers.index_folder import POINTER, writer_lock

    if not (folder / POINTER).is_file():
        return
    with writer_lock(folder, blocking=False) as locked:
        if not locked:
            return
        flat_index, flat_settings = folder / INDEX_DIR, folder / SETTINGS_FILE
        if flat_index.is_dir() and not flat_index.is_symlink():
            shutil.rmtree(flat_index, ignore_errors=True)
        if flat_settings.is_file() and not flat_settings.is_symlink():
            with contextlib.suppress(OSError):
                flat_settings.unlink()
            logger.info("%s: removed the files of the older flat layout", folder)


def load(
    path: str | os.PathLike, index_kwargs: Mapping[str, Any] | None = None
) -> tuple[Any, dict[str, Any]]:
    """Read a folder written by :func:`save`: ``(MultiVectorIndex, settings)``.

    Args:
        path: the retriever folder.
        index_kwargs: ``use_gpu`` / ``device`` for the loaded index and its search settings
            (:data:`SEARCH_SETTINGS`); any other option must equal the saved one.

    Raises:
        vllm_pool.retrievers.IndexFormatError: a missing, unreadable or malformed file.
        TypeError: an ``index_kwargs`` name that is no option of ``MultiVectorIndex``.
        ValueError: a build option in ``index_kwargs`` that differs from the saved index's.
    """
    from vllm_pool.retrievers.persistence import read_live

    def read(folder: Path) -> tuple[Any, dict[str, Any]]:
        settings = read_settings(folder / SETTINGS_FILE)
        return _load_index(folder / INDEX_DIR, settings, index_kwargs), settings

    # under the version's reader lock; a save that switches versions meanwhile is retried
    return read_live(path, read, marker=SETTINGS_FILE, missing="no saved ColBERT retriever")


def read_settings(settings_path: Path) -> dict[str, Any]:
    """The settings of ``colbert.json`` (format version 1 converted), checked.

    Raises:
        vllm_pool.retrievers.IndexFormatError: unreadable, an unknown version, a missing key,
            or a value of the wrong kind (naming the file and the key).
    """
    from vllm_pool.retrievers import ColBERTConfig, IndexFormatError

    try:
        settings = json.loads(settings_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{settings_path}: cannot read ColBERT retriever settings ({exc})") from exc
    version = settings.pop("format_version", None) if isinstance(settings, dict) else None
    if version == 1 and not isinstance(version, bool):  # encoder settings not recorded: [MASK] was always on
        missing = [k for k in _V1_KEYS if k not in settings]
        if missing:
            raise IndexFormatError(f"{settings_path}: format_version 1 without {missing}")
        settings["colbert"] = {**{k: settings.pop(k) for k in _V1_KEYS}, "mask_augment": True}
    elif version != SETTINGS_VERSION or not isinstance(settings.get("colbert"), dict):
        raise IndexFormatError(
            f"{settings_path}: unknown format (expected format_version {SETTINGS_VERSION})"
        )
    checks = {
        "model": lambda v: isinstance(v, str),
        "embedding_dim": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
        "split_long_documents": lambda v: isinstance(v, bool),
        "window_overlap": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "truncate": lambda v: isinstance(v, bool),
    }
    if "model" not in settings:
        raise IndexFormatError(f"{settings_path}: key 'model' missing")
    for key, ok in checks.items():
        if key in settings and not ok(settings[key]):
            raise IndexFormatError(f"{settings_path}: key {key!r}: unexpected value {settings[key]!r}")
    try:
        ColBERTConfig.from_settings(settings["colbert"])
    except (TypeError, ValueError) as exc:
        raise IndexFormatError(f"{settings_path}: key 'colbert': {exc}") from exc
    return settings


def _load_index(index_dir: Path, settings: dict[str, Any], index_kwargs: Mapping[str, Any] | None) -> Any:
    from vllm_pool.retrievers import MultiVectorIndex

    kwargs = dict(index_kwargs or {})
    options = {k: kwargs.pop(k) for k in LOAD_OPTIONS if k in kwargs}
    index = MultiVectorIndex.load(index_dir, expected_dim=settings.get("embedding_dim"), **options)
    apply_search_settings(index, kwargs)
    return index


def apply_search_settings(index: Any, index_kwargs: Mapping[str, Any]) -> None:
    """Set the search settings of ``index_kwargs`` on a loaded ``index``; its other options
    (``None`` ignored) must equal the index's own.

    Raises:
        TypeError: a name that is no option of ``MultiVectorIndex``.
        ValueError: a build option that differs from the index's, or a bad search setting.
    """
    from vllm_pool.retrievers.faiss_index import set_search_params
    from vllm_pool.retrievers.multivector_search import check_search_settings

    own = {**index.config, "model_name": index.model_name}
    unknown = sorted(set(index_kwargs) - set(own))
    if unknown:
        raise TypeError(f"unknown index_kwargs {unknown}; the options: {sorted([*own, *LOAD_OPTIONS])}")
    fixed = {k: v for k, v in index_kwargs.items() if k not in SEARCH_SETTINGS and v is not None}
    conflicts = {k: (own[k], v) for k, v in fixed.items() if v != own[k]}
    if conflicts:
        detail = ", ".join(f"{k}: saved {a!r}, given {b!r}" for k, (a, b) in sorted(conflicts.items()))
        raise ValueError(
            f"index_kwargs differ from how the saved index was built ({detail}); only "
            f"{list(SEARCH_SETTINGS)} and {list(LOAD_OPTIONS)} can change when it is loaded"
        )
    search = {k: v for k, v in index_kwargs.items() if k in SEARCH_SETTINGS}
    if not search:
        return
    config = {**index.config, **search}
    check_search_settings(config)
    for name, low in (("nprobe", 1), ("ef_search", 1), ("exact_filter_limit", 0)):
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    index.config.update(search)
    if index._index is not None:
        set_search_params(index._index, config["nprobe"], config["ef_search"])
