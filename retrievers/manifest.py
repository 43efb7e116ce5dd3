"""Checks on an index folder that may come from anyone: the manifest, ``docs.json`` and
``.npy`` headers are validated field by field before anything large is allocated.

Every problem raises :class:`~.types.IndexFormatError` naming the file and the field.
Only plain file names inside the folder are read: no separators, no ``..``, no links.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .types import IndexFormatError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DOCS = "docs.json"
_FILE_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_SUFFIXES = (".npy", ".faiss", ".json")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
MAX_MANIFEST_BYTES = 16 << 20
_MAX_NPY_HEADER = 10_000


def is_plain_file_name(name: str) -> bool:
    """Whether ``name`` is a file name an index may hold (no path, no ``..``, a known suffix)."""
    return bool(_FILE_NAME_RE.fullmatch(name)) and ".." not in name and name.endswith(_SUFFIXES)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class Manifest:
    """The validated fields of ``manifest.json``."""

    kind: str
    dim: int
    count: int
    model_name: str | None
    config: dict[str, Any]
    files: dict[str, dict[str, Any]]
    trained_on: int | None = None


def read_json(path: Path, limit: int = MAX_MANIFEST_BYTES) -> Any:
    """Parse a JSON file of at most ``limit`` bytes (a regular file, not a link)."""
    check_regular_file(path)
    size = path.stat().st_size
    if size > limit:
        raise IndexFormatError(f"{path}: {size} bytes, more than the {limit} bytes allowed")
    try:
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise IndexFormatError(f"{path}: not valid JSON ({exc})") from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def check_regular_file(path: Path) -> None:
    """Raise unless ``path`` is a regular file (links are refused: they may point anywhere)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise IndexFormatError(f"{path}: file missing") from None
    if stat.S_ISLNK(mode):
        raise IndexFormatError(f"{path}: is a symbolic link; only regular files are read")
    if not stat.S_ISREG(mode):
        raise IndexFormatError(f"{path}: not a regular file")


def parse_manifest(path: Path, kind: str, expected_dim: int | None) -> Manifest:
    """Read and validate ``manifest.json``.

    Args:
        path: the manifest file.
        kind: the index kind the caller expects.
        expected_dim: the dimension the caller expects, if any.
    """
    if not path.exists() and not path.is_symlink():
        raise IndexFormatError(f"{path}: manifest missing")
    data = read_json(path)
    if not isinstance(data, dict):
        raise IndexFormatError(f"{path}: manifest is not a JSON object")
    version = data.get("format_version")
    if version != FORMAT_VERSION or not _is_int(version):
        raise IndexFormatError(
            f"{path}: format_version {_describe(version)} is not supported "
            f"(this version reads {FORMAT_VERSION})"
        )
    if data.get("kind") != kind:
        raise IndexFormatError(f"{path}: holds a {_describe(data.get('kind'))} index, expected {kind!r}")
    dim = data.get("dim")
    if not _is_int(dim) or not 0 < dim <= 1 << 20:
        raise IndexFormatError(f"{path}: field 'dim': bad dimension {_describe(dim)} (a positive integer)")
    if expected_dim is not None and dim != expected_dim:
        raise IndexFormatError(f"{path}: index dimension is {dim}, expected {expected_dim}")
    count = data.get("count")
    if not _is_int(count) or not 0 <= count < 1 << 40:
        raise IndexFormatError(f"{path}: field 'count': {_describe(count)} is not a non-negative integer")
    model_name = data.get("model_name")
    if model_name is not None and not isinstance(model_name, str):
        raise IndexFormatError(f"{path}: field 'model_name': {_describe(model_name)} is not a string")
    config = data.get("config", {})
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise IndexFormatError(f"{path}: field 'config': not a JSON object")
    trained_on = data.get("trained_on")  # optional: older folders do not have it
    if trained_on is not None and (not _is_int(trained_on) or not 0 <= trained_on < 1 << 40):
        raise IndexFormatError(
            f"{path}: field 'trained_on': {_describe(trained_on)} is not a non-negative integer"
        )
    files = _parse_files(path, data.get("files"))
    return Manifest(kind, dim, count, model_name, config, files, trained_on)


def is_index_manifest(path: Path) -> bool:
    """Whether ``path`` is a ``manifest.json`` written by this library (any index kind): a
    JSON object of this format version whose ``files`` table parses. Another tool's
    ``manifest.json`` is not, so the files it lists are never taken for an index's."""
    try:
        data = read_json(path)
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            return False
        if not _is_int(data["format_version"]) or not isinstance(data.get("kind"), str):
            return False
        _parse_files(path, data.get("files"))
    except (IndexFormatError, OSError):
        return False
    return True


def _parse_files(path: Path, files: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(files, dict) or DOCS not in files:
        raise IndexFormatError(f"{path}: field 'files': bad or missing table (must list {DOCS})")
    out = {}
    for name, entry in files.items():
        if not is_plain_file_name(name) or name == MANIFEST:
            raise IndexFormatError(
                f"{path}: field 'files': {_describe(name)} is not a plain file name of this folder "
                "(letters, digits, '_', '-', '.', ending in .npy, .faiss or .json)"
            )
        if name.endswith(".json") and name != DOCS:
            raise IndexFormatError(f"{path}: field 'files': unexpected file {_describe(name)}")
        if not isinstance(entry, dict):
            raise IndexFormatError(f"{path}: field 'files.{name}': not a JSON object")
        size = entry.get("size")
        if not _is_int(size) or size < 0:
            raise IndexFormatError(
                f"{path}: field 'files.{name}.size': {_describe(size)} is not a byte count"
            )
        sha = entry.get("sha256")
        if sha is not None and (not isinstance(sha, str) or not _SHA256_RE.fullmatch(sha)):
            raise IndexFormatError(f"{path}: field 'files.{name}.sha256': not 64 lowercase hex digits")
        out[name] = {"size": size, "sha256": sha}
    return out


def check_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype an ``.npy`` file declares, checked against the file's size.

    Raises:
        IndexFormatError: an unreadable header, an object dtype, or a shape whose data does
            not fill the file exactly (so a crafted header cannot make the reader allocate).
    """
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            if major == 1:
                header = np.lib.format.read_array_header_1_0(f, max_header_size=_MAX_NPY_HEADER)
            elif major in (2, 3):
                header = np.lib.format.read_array_header_2_0(f, max_header_size=_MAX_NPY_HEADER)
            else:
                raise ValueError(f"unknown .npy version {major}")
            offset = f.tell()
        shape, _, dtype = header
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise IndexFormatError(f"{path}: not a readable .npy array ({exc})") from exc
    if dtype.hasobject or dtype.itemsize == 0:
        raise IndexFormatError(f"{path}: dtype {dtype} is not a numeric array")
    if any(not _is_int(d) or d < 0 for d in shape):
        raise IndexFormatError(f"{path}: bad shape {list(shape)}")
    expected = math.prod(shape) * dtype.itemsize
    if expected != size - offset:
        raise IndexFormatError(
            f"{path}: header shape {list(shape)} of {dtype} needs {expected} bytes of data, "
            f"the file holds {size - offset}"
        )
    return tuple(shape), dtype


def check_docs(path: Path, docs: Any, count: int) -> None:
    """Validate ``docs.json``: ids, slots, metadatas of ``count`` documents and ``next_slot``.

    Slots must be unique and increasing (the order documents were added in) and below
    ``next_slot``, so the id-to-vector mapping cannot be permuted and a later add cannot
    reuse a stored slot.
    """
    if not isinstance(docs, dict):
        raise IndexFormatError(f"{path}: not a JSON object")
    for field in ("ids", "slots", "metadatas"):
        value = docs.get(field)
        if not isinstance(value, list):
            raise IndexFormatError(f"{path}: field {field!r} is not a list")
        if len(value) != count:
            raise IndexFormatError(
                f"{path}: field {field!r} holds {len(value)} entries, manifest count is {count}"
            )
    ids, slots, metas = docs["ids"], docs["slots"], docs["metadatas"]
    for i, doc_id in enumerate(ids):
        if not isinstance(doc_id, str):
            raise IndexFormatError(f"{path}: field 'ids[{i}]': {_describe(doc_id)} is not a string")
    if len(set(ids)) != len(ids):
        raise IndexFormatError(f"{path}: field 'ids': duplicate ids")
    previous = -1
    for i, slot in enumerate(slots):
        if not _is_int(slot) or slot <= previous:
            raise IndexFormatError(
                f"{path}: field 'slots[{i}]': {_describe(slot)} is not an integer above the previous "
                "slot (slots are unique and increasing)"
            )
        previous = slot
    for i, meta in enumerate(metas):
        if not isinstance(meta, dict):
            raise IndexFormatError(f"{path}: field 'metadatas[{i}]': not a JSON object")
    next_slot = docs.get("next_slot")
    if not _is_int(next_slot) or next_slot <= previous or next_slot >= 1 << 62:
        raise IndexFormatError(
            f"{path}: field 'next_slot': {_describe(next_slot)} must be an integer above "
            f"every slot ({previous})"
        )
