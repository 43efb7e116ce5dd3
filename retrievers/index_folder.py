"""An index folder whose visible contents change in one atomic step.

Layout of a folder ``idx/`` written by :func:`write_version`::

    idx/CURRENT                 one line: the name of the live version folder
    idx/v-000007-1f2e3d4c/      manifest.json, docs.json, .npy and .faiss files
    idx/.lock                   serializes writers (``flock``; absent where unsupported)

A save writes a complete version into ``idx/.tmp-*``, fsyncs it, renames it to ``v-*``,
then replaces ``CURRENT`` with ``os.replace`` (fsynced file, then fsynced folder). Readers
follow ``CURRENT``, so at every instant the folder shows either the previous index or the
new one, never a mix and never nothing. Leftovers of interrupted saves (``.tmp-*`` folders,
versions ``CURRENT`` does not name) are removed by the next save or load that gets the
writer lock. A folder in the older flat layout (``manifest.json`` at its top) is still read,
and is converted by the next save.

A save never deletes what is not an index's: a top-level ``manifest.json`` counts as the flat
layout only when it is this library's manifest (:func:`~.manifest.is_index_manifest`), so
saving into a folder that holds another tool's ``manifest.json`` (or any other files) writes
the index beside them and leaves them as they are.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from .types import IndexFormatError

logger = logging.getLogger(__name__)

POINTER = "CURRENT"
LOCK = ".lock"
LEGACY_MANIFEST = "manifest.json"
_VERSION_RE = re.compile(r"v-(\d{6,12})-([0-9a-f]{8})")
_TMP_RE = re.compile(r"\.tmp-[0-9a-f]{8}")
_POINTER_TMP_RE = re.compile(r"\.CURRENT\.tmp-[0-9a-f]{8}")
_MAX_POINTER_BYTES = 256


def _checkpoint(step: str) -> None:
    """Called between the steps of a save; the fault-injection tests kill the process here."""


def fsync_path(path: Path) -> None:
    """Flush a file or a folder to disk (folders only where the platform allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. folders on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def writer_lock(folder: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold the folder's writer lock; yields ``False`` when it was not taken (non-blocking
    and busy, or a read-only folder), ``True`` otherwise (also where ``flock`` is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover  (Windows: no cross-process lock)
        yield True
        return
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def reading(folder: Path) -> Iterator[None]:
    """Hold a shared lock on a version folder while its files are read, so that a save's
    clean-up does not delete it under the reader (it is removed by a later save instead)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield  # the read reports the missing folder
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _remove_unread(folder: Path) -> bool:
    """Delete a version folder unless a reader holds it (see :func:`reading`)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        shutil.rmtree(folder, ignore_errors=True)
        return True
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # being read: the next save removes it
        shutil.rmtree(folder, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def _is_plain_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def read_pointer(folder: Path) -> str | None:
    """The version named by ``folder/CURRENT``; ``None`` when there is no pointer.

    Raises:
        IndexFormatError: the pointer is not one well-formed version name.
    """
    pointer = folder / POINTER
    if not pointer.exists() and not pointer.is_symlink():
        return None
    if pointer.is_symlink() or not pointer.is_file():
        raise IndexFormatError(f"{pointer}: not a plain file")
    with open(pointer, "rb") as f:
        raw = f.read(_MAX_POINTER_BYTES + 1)
    try:
        name = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        name = ""
    if len(raw) > _MAX_POINTER_BYTES or not _VERSION_RE.fullmatch(name):
        raise IndexFormatError(f"{pointer}: does not name a version folder (expected v-NNNNNN-xxxxxxxx)")
    return name


def _versions(folder: Path) -> list[str]:
    """Complete version folders in ``folder``, oldest first."""
    names = [n for n in os.listdir(folder) if _VERSION_RE.fullmatch(n) and _is_plain_dir(folder / n)]
    return sorted(names, key=lambda n: int(_VERSION_RE.fullmatch(n).group(1)))  # type: ignore[union-attr]


def _holds_flat_index(folder: Path, marker: str = LEGACY_MANIFEST) -> bool:
    """Whether ``folder`` has ``marker`` at its top as the flat layout does; a ``manifest.json``
    must also be this library's (another tool's manifest is not an index)."""
    entry = folder / marker
    if marker != LEGACY_MANIFEST:
        return entry.exists()
    from .manifest import is_index_manifest

    return entry.is_file() and not entry.is_symlink() and is_index_manifest(entry)


def version_folder(path: str | os.PathLike, marker: str = LEGACY_MANIFEST) -> Path:
    """The folder holding the live files of the index at ``path``.

    ``path/v-*`` named by ``path/CURRENT``; ``path`` itself for the older flat layout (a
    folder with ``marker`` at its top: ``manifest.json``, or ``shards.json`` for shards).

    Raises:
        IndexFormatError: no index at ``path``, or a pointer that names no version folder.
    """
    folder = Path(path)
    if not _is_plain_dir(folder):
        _recover_stranded(folder)
    if not folder.is_dir():
        raise IndexFormatError(f"{folder}: no index folder there")
    name = read_pointer(folder)
    if name is not None:
        live = folder / name
        if not _is_plain_dir(live):
            raise IndexFormatError(f"{folder / POINTER}: names {name}, which is not a folder in {folder}")
        return live
    versions = _versions(folder)
    if (folder / marker).exists() and (not versions or _holds_flat_index(folder, marker)):
        return folder  # (a damaged flat manifest is reported by the reader)
    if versions:  # the pointer was deleted by hand: the newest complete version is the index
        logger.warning("%s: no %s pointer; reading the newest version %s", folder, POINTER, versions[-1])
        return folder / versions[-1]
    raise IndexFormatError(f"{folder}: no index in this folder (neither {POINTER} nor {LEGACY_MANIFEST})")


def write_version(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write a new version of the index folder ``path`` and make it the live one atomically.

    Args:
        path: the index folder (created when missing).
        write: fills the (empty) folder it is given with the index files.

    Returns:
        The new version folder.

    Raises:
        ValueError: ``path`` exists and is not a folder.
    """
    target = Path(path)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise ValueError(f"{target} exists and is not a folder")
    _recover_stranded(target)
    target.mkdir(parents=True, exist_ok=True)
    with writer_lock(target):
        if (target / LEGACY_MANIFEST).exists() and not _holds_flat_index(target):
            logger.warning(
                "%s: its %s is not an index manifest of this library; it and the files it names "
                "are left as they are, the index is written beside them",
                target,
                LEGACY_MANIFEST,
            )
        _clean(target)
        _clean_old_siblings(target)
        versions = _versions(target)
        seq = int(_VERSION_RE.fullmatch(versions[-1]).group(1)) + 1 if versions else 1  # type: ignore[union-attr]
        tag = uuid.uuid4().hex[:8]
        tmp = target / f".tmp-{tag}"
        final = target / f"v-{seq:06d}-{tag}"
        tmp.mkdir()
        switched = False
        try:
            write(tmp)
            fsync_path(tmp)
            _checkpoint("written")
            os.replace(tmp, final)
            fsync_path(target)
            _checkpoint("renamed")
            _replace_pointer(target, final.name)
            switched = True
            _checkpoint("switched")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if not switched:
                shutil.rmtree(final, ignore_errors=True)
            raise
        _clean(target)
        _checkpoint("cleaned")
    return final


def publish_folder(src: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Make the contents of the folder ``src`` (on the same file system) the live version of
    ``path``, atomically, and remove ``src``; see :func:`write_version`."""
    source = Path(src)

    def move(dest: Path) -> None:
        for name in os.listdir(source):
            os.replace(source / name, dest / name)

    try:
        return write_version(path, move)
    finally:
        shutil.rmtree(source, ignore_errors=True)


def _replace_pointer(folder: Path, name: str) -> None:
    tmp = folder / f".{POINTER}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "w", encoding="ascii") as f:
            f.write(name + "\n")
            f.flush()
            os.fsync(f.fileno())
        _checkpoint("pointer-written")
        os.replace(tmp, folder / POINTER)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_path(folder)


def clean_leftovers(path: str | os.PathLike) -> None:
    """Remove what interrupted saves left in ``path``, if no save is running now."""
    folder = Path(path)
    if not _is_plain_dir(folder):
        return
    with writer_lock(folder, blocking=False) as locked:
        if locked:
            with contextlib.suppress(OSError):
                _clean(folder)


def _clean(folder: Path) -> None:
    """Under the writer lock: drop temporary folders, pointer temporaries, versions the pointer
    does not name, and the files of the flat layout once a pointer exists."""
    try:
        live = read_pointer(folder)
    except IndexFormatError:
        return  # leave a damaged folder as it is for the user to inspect
    versions = _versions(folder)
    flat = _holds_flat_index(folder)
    if live is None and not flat and versions:
        live = versions[-1]  # keep the newest complete version (see version_folder)
    removed = 0
    for name in os.listdir(folder):
        entry = folder / name
        if _TMP_RE.fullmatch(name) or (_VERSION_RE.fullmatch(name) and name != live):
            if entry.is_symlink() or not entry.is_dir():
                continue
            removed += _remove_unread(entry)
        elif _POINTER_TMP_RE.fullmatch(name) and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)
            removed += 1
    if live is not None and flat:  # only this library's manifest: never another tool's files
        removed += _remove_flat_layout(folder)
    if removed:
        logger.info("%s: removed %d leftover entries of earlier saves", folder, removed)


def _remove_flat_layout(folder: Path) -> int:
    """Delete the top-level files of the flat layout (those its manifest lists, plain names only)."""
    import json

    from .manifest import is_plain_file_name

    manifest = folder / LEGACY_MANIFEST
    try:
        listed = json.loads(manifest.read_text(encoding="utf-8")).get("files") or {}
    except (ValueError, UnicodeDecodeError, AttributeError, OSError):
        listed = {}
    if not isinstance(listed, dict):
        listed = {}
    names = [n for n in listed if isinstance(n, str) and is_plain_file_name(n)]
    removed = 0
    for name in [*names, LEGACY_MANIFEST]:
        entry = folder / name
        if entry.is_file() and not entry.is_symlink():
            entry.unlink()
            removed += 1
    return removed


def _old_siblings(target: Path, kind: str) -> list[Path]:
    """``.NAME.tmp-*`` / ``.NAME.old-*`` folders next to ``target`` (the older save's names)."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.{kind}-[0-9a-f]{{8}}")
    return [
        target.parent / n
        for n in os.listdir(target.parent)
        if pattern.fullmatch(n) and _is_plain_dir(target.parent / n)
    ]


STALE_SIBLING_SECONDS = 3600
"""A ``.NAME.tmp-*`` sibling untouched this long is a leftover (younger ones may be a build
in progress, e.g. the Ray index builder's working folder)."""


def _clean_old_siblings(target: Path) -> None:
    """Remove the temporary and previous folders that the older two-rename save left behind."""
    now = time.time()
    stale = [p for p in _old_siblings(target, "tmp") if now - p.stat().st_mtime > STALE_SIBLING_SECONDS]
    for leftover in stale + _old_siblings(target, "old"):
        shutil.rmtree(leftover, ignore_errors=True)
        logger.info("removed %s, left by an interrupted save", leftover)


def _recover_stranded(target: Path) -> None:
    """Put back an index that the older two-rename save left as a ``.NAME.old-*`` sibling,
    when ``target`` itself is missing (that save was killed between its two renames)."""
    if target.exists() or target.is_symlink() or not target.parent.is_dir():
        return
    stranded = _old_siblings(target, "old")
    if not stranded:
        return
    newest = max(stranded, key=lambda p: p.stat().st_mtime)
    try:
        os.replace(newest, target)
    except OSError as exc:
        logger.warning("could not restore the stranded index %s to %s: %s", newest, target, exc)
        return
    logger.warning("restored the index stranded by an interrupted save: %s -> %s", newest, target)
