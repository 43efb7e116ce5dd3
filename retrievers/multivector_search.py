"""The search settings of a :class:`~.multivector.MultiVectorIndex` and its search by index type.

:func:`check_search_settings` checks ``candidates_per_token``, ``ncells``, ``ndocs`` and
``centroid_score_threshold``; :func:`search_by_type` searches as the index type does:

- ``"flat"`` (default): every (allowed) document is scored exactly, the store read in
  fixed-size blocks (:func:`~.candidates.scan_store`), on a device copy when there is a GPU;
- ``"plaid"``: centroid interaction, pruning, exact MaxSim on decompressed vectors
  (:meth:`~.plaid.PlaidStore.search`);
- FAISS candidate indexes (``"ivf"``, ``"hnsw"``...): the ``candidates_per_token`` nearest
  document tokens of every query token (:func:`~.candidates.candidate_slots`), the union of
  their documents scored exactly; every allowed document when the index cannot give enough.

(A filter matching at most ``exact_filter_limit`` documents, ``exhaustive=True`` and an IVF
index not trained yet are handled by the index itself: exact MaxSim.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .candidates import Keep, candidate_slots, maxsim_slots, scan_store
from .token_store import TokenStore
from .types import check_k


def check_search_settings(config: dict[str, Any]) -> None:
    """Check the search settings of an index's ``config``.

    Raises:
        TypeError, ValueError: ``candidates_per_token`` is not an int >= 1, ``ncells`` or
            ``ndocs`` is neither ``None`` nor an int >= 1, ``centroid_score_threshold`` is
            neither ``None`` nor a number.
    """
    check_k(config["candidates_per_token"])
    for name in ("ncells", "ndocs"):
        value = config[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be None or an int >= 1, got {value!r}")
    threshold = config["centroid_score_threshold"]
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
        raise ValueError(f"centroid_score_threshold must be None or a number, got {threshold!r}")


def search_by_type(
    store: TokenStore,
    faiss_index: Any,
    config: dict[str, Any],
    device: torch.device | None,
    qs: list[np.ndarray],
    k: int,
    k_tok: int,
    allowed: np.ndarray | None,
    want: int,
    keep: Keep,
    tombstones: int,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query ``(slots, scores)``: its best ``k`` documents, possibly with others (the caller
    keeps the top ``k``).

    Args:
        store: the index's token store (a :class:`~.plaid.PlaidStore` for ``"plaid"``).
        faiss_index: the FAISS candidate index (for the FAISS index types).
        config: the index's config (``index_type``; ``ncells``, ``ndocs`` and
            ``centroid_score_threshold`` for ``"plaid"``).
        device: where exact MaxSim reads the store (:func:`~.candidates.scan_device`).
        qs: query token matrices ``[Lq_i, D]``.
        k: hits per query.
        k_tok: FAISS neighbours fetched per query token.
        allowed: ``int64`` slots that may be returned (``None``: every document).
        want: ``min(k, allowed documents)``, the candidates a query needs.
        keep: whether a document of the FAISS index may be returned (live, and allowed).
        tombstones: vectors of removed documents still in the FAISS index.
    """
    index_type = str(config["index_type"]).lower()
    if index_type == "flat":  # exact: every document, scanned in blocks
        return scan_store(store, qs, k, allowed, device)
    if index_type == "plaid":
        return store.search(
            qs, k, allowed, config["ncells"], config["ndocs"], config["centroid_score_threshold"]
        )
    pools = candidate_slots(faiss_index, qs, want, k_tok, keep, tombstones, allowed is not None)
    out = []
    for q, pool in zip(qs, pools, strict=True):
        if pool is None:  # the candidate index cannot give k documents: score all of them
            out.append(scan_store(store, [q], k, allowed, device)[0])
        else:
            out.append((pool, maxsim_slots(store, q, pool, device)))
    return out
