"""Where ``VllmPoolVectorStore.save_local`` writes and ``load_local`` reads an index."""

from __future__ import annotations

import os
from pathlib import Path


def index_path(folder_path: str | os.PathLike, index_name: str) -> Path:
    """``folder_path / index_name``.

    Raises:
        ValueError: ``index_name`` is not a plain file name.
    """
    if not isinstance(index_name, str) or not index_name or index_name in (".", "..") or "/" in index_name:
        raise ValueError(f"index_name must be a plain file name, got {index_name!r}")
    return Path(folder_path) / index_name


def saved_index_path(folder_path: str | os.PathLike, index_name: str) -> Path:
    """The index folder that ``save_local(folder_path, index_name)`` wrote (an older
    ``save_local(folder)`` wrote the index as the folder itself).

    Raises:
        vllm_pool.retrievers.IndexFormatError: a LangChain FAISS store (``index.pkl``) is there.
    """
    from vllm_pool.retrievers import IndexFormatError

    path = index_path(folder_path, index_name)
    folder = Path(folder_path)
    if not path.exists() and ((folder / "manifest.json").exists() or (folder / "CURRENT").exists()):
        return folder  # saved by an older save_local(folder): the index is the folder itself
    if not path.exists() and (folder / f"{index_name}.pkl").exists():
        raise IndexFormatError(
            f"{folder}: a LangChain FAISS store ({index_name}.faiss + {index_name}.pkl, pickled); "
            "vllm-pool never unpickles. Rebuild it with VllmPoolVectorStore.from_embeddings or from_texts"
        )
    return path
