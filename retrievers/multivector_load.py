"""Loading a :class:`~.multivector.MultiVectorIndex` folder: the device the loaded index runs
on (:func:`load_device`) and its FAISS candidate index (:func:`restore_candidates`)."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch

from .persistence import IndexFiles, restore_faiss

logger = logging.getLogger(__name__)


def load_device(saved: str | None, given: str | None, path: str | os.PathLike) -> str | None:
    """The ``device`` a loaded index runs on: ``given`` when not ``None``, else the ``saved``
    one, except a CUDA device this machine lacks (no CUDA, or fewer GPUs): then ``"cpu"``,
    with a warning, so that an index saved on a GPU machine loads and searches on a CPU one."""
    if given is not None:
        return given
    if saved is None:
        return None
    try:
        dev = torch.device(saved)
    except (RuntimeError, TypeError, ValueError):
        return saved  # not a device name: the index's constructor reports it
    missing = not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()
    if dev.type == "cuda" and missing:
        logger.warning(
            "%s was saved with device=%r, which this machine does not have: it runs on the CPU "
            "(load(..., device=...) chooses another device)",
            path,
            saved,
        )
        return "cpu"
    return saved


def restore_candidates(index: Any, files: IndexFiles, path: str | os.PathLike, use_gpu: bool | None) -> None:
    """Give a loaded multi-vector ``index`` (its store and registry filled) the FAISS candidate
    index of ``files``, checked against the stored documents (:func:`~.persistence.restore_faiss`).

    Raises:
        IndexFormatError: fewer FAISS vectors than document tokens, or labels that are not
            the documents' slots.
    """
    if "candidates.faiss" in files.indexes and index._uses_faiss():
        rows = files.arrays["doc_lengths.npy"].astype(np.int64)
        restore_faiss(index, files, "candidates.faiss", rows, path, use_gpu)
