"""Loading a :class:`~.multivector.MultiVectorIndex` folder: the device the loaded index runs
on (:func:`load_device`) and its FAISS candidate index (:func:`restore_candidates`)."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch

from .persistence import IndexFiles, check_labels, placed_faiss
from .types import IndexFormatError

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
    index of ``files``, checked against the stored documents.

    Raises:
        IndexFormatError: fewer FAISS vectors than document tokens, or labels that are not
            the documents' slots.
    """
    if "candidates.faiss" not in files.indexes or not index._uses_faiss():
        return
    faiss_index = files.indexes["candidates.faiss"]
    extra = faiss_index.ntotal - index._store.num_vectors
    if extra < 0:
        raise IndexFormatError(
            f"{path}/candidates.faiss: {faiss_index.ntotal} vectors "
            f"for {index._store.num_vectors} document tokens"
        )
    rows = files.arrays["doc_lengths.npy"].astype(np.int64)
    check_labels(faiss_index, index._registry.slots(), rows, f"{path}/candidates.faiss")
    index._tombstones = extra
    index._trained_on = faiss_index.ntotal
    index._index = placed_faiss(faiss_index, index.config, use_gpu)
