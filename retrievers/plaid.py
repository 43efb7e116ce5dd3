"""A PLAID-style compressed multi-vector store and its search (``index_type="plaid"``).

Each token vector is kept as a centroid id plus an ``nbits``-per-dimension residual
(:class:`~.residual_codec.ResidualCodec`), in the rows of a :class:`~.token_store.TokenStore`
(so adding, removing, compacting and saving work as for the other storages). An inverted
list maps every centroid (cell) to the documents with a token in it. A search runs PLAID's
four stages (Santhanam et al., 2022; see :mod:`.plaid_search`): candidate generation from
the ``ncells`` best cells per query token, centroid interaction with pruning to ``ndocs``,
centroid interaction without pruning to ``ndocs / 4``, and exact MaxSim of the query
against the decompressed token vectors of those documents.

Everything per query is bounded by ``ncells``, ``ndocs`` and the cell sizes, not by the
corpus. The search runs in torch / numpy on ``device`` (a GPU when there is one).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from vllm_pool.maxsim_kernel import segment_maxsim

from .candidates import top_k
from .plaid_search import active_cells, best, centroid_scores, probe, pruned_scores, rows_of, search_defaults
from .residual_codec import ResidualCodec, check_nbits
from .token_store import TokenStore

logger = logging.getLogger(__name__)


def id_bytes(n_centroids: int) -> int:
    """Bytes of the centroid id at the start of each row: 2 (uint16) up to 65,536 centroids, else 4."""
    return 2 if n_centroids <= 1 << 16 else 4


def position_dtype(n_documents: int) -> type:
    """The inverted list's document positions: ``uint16`` (2 bytes a (cell, document) pair)
    up to 65,536 documents, else ``int32``. At 10^6 vectors (15,625 passages of 64 tokens)
    the pairs are ~0.8 per token vector, so this is 1.6 bytes per vector instead of 3.2."""
    return np.uint16 if n_documents <= 1 << 16 else np.int32


TRUSTED_TRAINING = 4096
"""Token vectors a codec must be trained on for the store to drop its documents' raw fp32
vectors. Until then (a store fed a few documents at a time) its frequent re-trains fit and
encode the raw vectors, not decoded ones, so the error of the first tiny codecs does not
compound; a store built from 4,096 vectors or more keeps none."""


class PlaidStore(TokenStore):
    """Token vectors as centroid ids + packed residuals, with a cell -> documents inverted list.

    Args:
        dim: vector dimension.
        nbits: residual bits per dimension (1, 2 or 4; ``dim * nbits`` a multiple of 8).
        device: where searches run (``None``: ``"cuda"`` when torch sees a GPU, else ``"cpu"``).
        retrain_growth: re-train the centroids when the store holds this many times the
            vectors they were trained on (the stored vectors are decoded and re-encoded).
    """

    def __init__(self, dim: int, nbits: int = 2, device: str | None = None, retrain_growth: int = 4) -> None:
        check_nbits(nbits, dim)
        self.nbits = nbits
        self.retrain_growth = retrain_growth
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.codec: ResidualCodec | None = None
        self.trained_on = 0
        self._ivf: tuple[np.ndarray, np.ndarray] | None = None  # (offsets [C+1], doc positions)
        self._ivf_epoch: object = None  # the segments() epoch the inverted list was built in
        self._ivf_docs = 0  # the first documents of segments() it covers
        self._centroids_t: torch.Tensor | None = None
        self._raw: dict[int, np.ndarray] | None = {}  # slot -> raw vectors, see TRUSTED_TRAINING
        self.id_bytes = 2
        super().__init__(dim, "fp32")
        self.storage = "plaid"
        self._codes = np.zeros((0, *self._code_shape()), dtype=np.uint8)

    # -- codec hooks of TokenStore ----------------------------------------------------------
    def _code_shape(self) -> tuple[int]:
        return (self.id_bytes + self.dim * self.nbits // 8,)

    def _code_dtype(self) -> type:
        return np.uint8

    def _encode(self, x: np.ndarray) -> tuple[np.ndarray, None]:
        if self.codec is None:
            self._train(x)
        ids, packed = self.codec.encode(x)
        rows = np.empty((len(x), *self._code_shape()), dtype=np.uint8)
        dtype = "<u2" if self.id_bytes == 2 else "<u4"
        rows[:, : self.id_bytes] = ids.astype(dtype).view(np.uint8).reshape(len(x), self.id_bytes)
        rows[:, self.id_bytes :] = packed
        return rows, None

    def decode_rows(self, codes: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
        return self.codec.decode(self.row_ids(codes), codes[:, self.id_bytes :])

    def row_ids(self, codes: np.ndarray) -> np.ndarray:
        """Centroid ids ``int64 [n]`` of stored rows."""
        dtype = "<u2" if self.id_bytes == 2 else "<u4"
        return np.ascontiguousarray(codes[:, : self.id_bytes]).view(dtype)[:, 0].astype(np.int64)

    def _train(self, x: np.ndarray) -> None:
        """Fit the codec to ``x`` (the store must be empty: the row width follows the centroids)."""
        self._set_codec(ResidualCodec.train(x, self.nbits, device=self.device))
        self.trained_on = len(x)

    def _set_codec(self, codec: ResidualCodec) -> None:
        self.codec = codec
        self.id_bytes = id_bytes(codec.num_centroids)
        self._centroids_t = None
        self._ivf = None  # cells of other centroids
        if self._n == 0:
            self._codes = np.zeros((0, *self._code_shape()), dtype=np.uint8)

    # -- mutation --------------------------------------------------------------------------
    def add(self, slots: Sequence[int], docs: Sequence[np.ndarray]) -> None:
        """Append documents; re-train first when the store has grown well past its training set."""
        new = sum(len(d) for d in docs)
        if self.codec is not None and self.num_vectors + new >= self.retrain_growth * self.trained_on:
            self._retrain(slots, docs)
            return
        super().add(slots, docs)
        if self._raw is not None and self.trained_on < TRUSTED_TRAINING:
            self._raw.update((int(s), np.array(d, dtype=np.float32)) for s, d in zip(slots, docs))
        else:
            self._raw = None

    def remove(self, slots: Sequence[int]) -> None:
        super().remove(slots)
        for slot in slots if self._raw is not None else ():
            self._raw.pop(int(slot), None)

    def _retrain(self, slots: Sequence[int], docs: Sequence[np.ndarray]) -> None:
        """Train a new codec on the stored documents (their raw vectors while the store keeps
        them, else decoded) and ``docs``, and re-encode everything. A failure at any point (also
        ``MemoryError`` or ``KeyboardInterrupt``) puts the store back as it was: the old state
        is only replaced, never changed in place."""
        order = list(self._span)
        raw = self._raw if self._raw is not None and all(s in self._raw for s in order) else None
        if raw is not None:
            old_docs = [raw[s] for s in order]
            old = np.concatenate(old_docs) if order else np.zeros((0, self.dim), np.float32)
        else:
            old, lengths = self.decode(order)
            old_docs = np.split(old, np.cumsum(lengths)[:-1]) if len(order) else []
        new = sum(map(len, docs))
        logger.info("re-training PLAID centroids: %d stored + %d new token vectors", len(old), new)
        saved = dict(vars(self))  # every field below is re-assigned, so a shallow copy keeps them
        try:
            self.codec = None
            self._codes = np.zeros((0, *self._code_shape()), dtype=np.uint8)
            self._n, self._dead, self._span, self._segments = 0, 0, {}, None
            self._mirror, self._mirror_n, self._ivf, self._ivf_epoch = None, 0, None, None
            self._train(np.concatenate([old, *docs]))
            super().add([*order, *slots], [*old_docs, *docs])
            kept = raw is not None and self.trained_on < TRUSTED_TRAINING
            new_raw = ((int(s), np.array(d, dtype=np.float32)) for s, d in zip(slots, docs))
            self._raw = {**raw, **dict(new_raw)} if kept else None
        except BaseException:
            vars(self).update(saved)
            raise

    # -- inverted list ---------------------------------------------------------------------
    def inverted_list(self) -> tuple[np.ndarray, np.ndarray]:
        """``(offsets int64 [C+1], docs [P])``: the positions (in :meth:`segments` order) of
        the documents with a token in cell ``c`` are ``docs[offsets[c]:offsets[c+1]]``, ascending
        (``docs`` in :func:`position_dtype`: ``uint16`` up to 65,536 documents).

        Kept between calls. While documents were only appended since (same
        :attr:`_segments_epoch`), only their pairs are merged in; anything else (a removal, an
        overwrite, a compaction, a load, re-trained centroids) builds it anew.
        """
        n = len(self.segments()[0])
        if self._ivf is None or self._ivf_epoch is not self._segments_epoch or self._ivf_docs > n:
            self._ivf = self._build_inverted_list()
        elif self._ivf_docs < n:
            self._ivf = self._append_to_inverted_list(self._ivf_docs)
        self._ivf_epoch, self._ivf_docs = self._segments_epoch, n
        return self._ivf

    def _build_inverted_list(self) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`inverted_list` from scratch: the (cell, document) pairs of every document."""
        n = len(self.segments()[0])
        cells, docs = self._cell_doc_pairs(0)
        offsets = np.searchsorted(cells, np.arange(self.codec.num_centroids + 1)).astype(np.int64)
        return offsets, docs.astype(position_dtype(n))

    def _append_to_inverted_list(self, first: int) -> tuple[np.ndarray, np.ndarray]:
        """The kept inverted list plus the pairs of the documents from position ``first`` on.

        Their positions exceed all listed ones, so each cell's pairs go at the end of its block
        and every block stays ascending."""
        offsets, docs = self._ivf
        n = len(self.segments()[0])
        cells, new_docs = self._cell_doc_pairs(first)
        dtype = position_dtype(n)
        docs = np.insert(docs.astype(dtype, copy=False), offsets[cells + 1], new_docs.astype(dtype))
        added = np.bincount(cells, minlength=self.codec.num_centroids)
        return offsets + np.concatenate([[0], np.cumsum(added)]), docs

    def _cell_doc_pairs(self, first: int) -> tuple[np.ndarray, np.ndarray]:
        """``(cells, positions)`` ``int64``: each distinct (cell, document) pair of the documents
        from position ``first`` of :meth:`segments` on, sorted by cell, then position."""
        starts, lengths, _ = self.segments()
        starts, lengths = starts[first:], lengths[first:]
        n = max(len(starts), 1)
        ids = self.row_ids(self._codes[rows_of(starts, lengths)])
        doc = np.repeat(np.arange(len(starts), dtype=np.int64), lengths)
        pairs = np.unique(ids * n + doc)  # sorted by cell, then document
        return pairs // n, pairs % n + first

    # -- search ----------------------------------------------------------------------------
    def _centroids(self) -> torch.Tensor:
        """The fp16 centroids on ``device`` (kept there between searches)."""
        if self._centroids_t is None:
            self._centroids_t = torch.from_numpy(self.codec.centroids).to(self.device)
        return self._centroids_t

    def _id_column(self) -> np.ndarray:
        """The centroid ids of all rows, a strided view of the rows (no copy)."""
        dtype = "<u2" if self.id_bytes == 2 else "<u4"
        return self._codes[: self._n, : self.id_bytes].view(dtype)[:, 0]

    def search(
        self,
        qs: list[np.ndarray],
        k: int,
        allowed: np.ndarray | None = None,
        ncells: int | None = None,
        ndocs: int | None = None,
        centroid_score_threshold: float | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The top ``k`` documents of each query ``[Lq, dim]`` (unit rows): ``(slots, scores)``.

        The stages of :mod:`.plaid_search`, then exact MaxSim on decompressed vectors.

        Args:
            qs: query token matrices.
            k: hits per query.
            allowed: ``int64`` slots that may be returned (``None``: all).
            ncells: cells probed per query token (default :func:`~.plaid_search.search_defaults`);
                doubled until the candidates reach ``min(k, allowed documents)``.
            ndocs: candidates kept by the pruned centroid interaction; the best ``ndocs / 4``
                of them (at least ``k``) by the full centroid interaction are scored exactly.
            centroid_score_threshold: the pruned stage counts only the cells whose best
                query-token score reaches it.
        """
        starts, lengths, slots = self.segments()
        if len(starts) == 0:
            return [(slots, np.zeros(0, np.float32)) for _ in qs]
        offsets, docs = self.inverted_list()
        mask = None if allowed is None else np.isin(slots, allowed)  # [n documents]
        n_allowed = len(starts) if mask is None else int(mask.sum())
        auto_cells, auto_threshold, auto_docs = search_defaults(k)
        ncells = ncells or auto_cells
        threshold = auto_threshold if centroid_score_threshold is None else centroid_score_threshold
        ndocs = max(ndocs or auto_docs, k)
        keep = max(k, ndocs // 4)
        centroids = self._centroids()
        id_column = self._id_column()
        out = []
        for q in qs:
            qt = torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32)).to(self.device)
            cell_scores = self._cell_scores(qt, centroids)  # [Lq, C], computed once per query
            cand = probe(cell_scores, offsets, docs, mask, min(k, n_allowed), ncells)
            if len(cand) > keep:
                table = np.ascontiguousarray(cell_scores.T.cpu().numpy())  # [C, Lq]
                if len(cand) > ndocs:  # stage 2: pruned centroid interaction -> ndocs
                    active = active_cells(cell_scores, threshold)
                    cand = cand[best(pruned_scores(table, active, offsets, docs, cand), ndocs)]
                if len(cand) > keep:  # stage 3: full centroid interaction -> ndocs / 4
                    ids = id_column[rows_of(starts[cand], lengths[cand])]
                    cand = cand[best(centroid_scores(table, ids, lengths[cand]), keep)]
            scores = self._exact_scores(qt, starts[cand], lengths[cand])  # stage 4
            out.append(top_k(slots[cand], scores, k))
        return out

    def _cell_scores(self, qt: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
        """``float32 [Lq, C]``: query tokens x centroids (fp16 GEMM on a GPU, fp32 on the CPU)."""
        if centroids.device.type == "cuda":
            return (qt.to(centroids.dtype) @ centroids.T).float()
        return qt @ centroids.float().T

    def _exact_scores(self, qt: torch.Tensor, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """MaxSim of the query against the decompressed token vectors of the documents."""
        rows = self._codes[rows_of(starts, lengths)]
        ids = torch.from_numpy(self.row_ids(rows)).to(self.device)
        packed = torch.from_numpy(np.ascontiguousarray(rows[:, self.id_bytes :])).to(self.device)
        tokens = self.codec.decode_torch(ids, packed, self._centroids())  # [T', dim]
        local = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        return segment_maxsim(qt, tokens, local, lengths)[0].cpu().numpy()

    # -- accounting and persistence --------------------------------------------------------
    def nbytes(self) -> dict[str, int]:
        """Bytes held by the live rows, the inverted list, the document table, the codec and
        the raw vectors a store keeps while its codec is provisional (:data:`TRUSTED_TRAINING`)."""
        if self.codec is None:
            return {"codes": 0, "inverted_list": 0, "documents": 0, "codec": 0, "raw": 0}
        offsets, docs = self.inverted_list()
        starts, lengths, slots = self.segments()
        return {
            "codes": self.num_vectors * self._code_shape()[0],
            "inverted_list": offsets.nbytes + docs.nbytes,
            "documents": starts.nbytes + lengths.nbytes + slots.nbytes,
            "codec": self.codec.nbytes(),
            "raw": sum(v.nbytes for v in (self._raw or {}).values()),
        }

    def bytes_per_vector(self) -> float:
        """Everything held per token vector: codes, inverted list, document table, centroids."""
        return sum(self.nbytes().values()) / max(self.num_vectors, 1)

    def to_arrays(self, order: Sequence[int]) -> dict[str, np.ndarray]:
        """``.npy`` arrays: the rows of documents ``order``, their lengths and the codec."""
        arrays = super().to_arrays(order)
        if self.codec is not None:
            arrays["plaid_centroids.npy"] = self.codec.centroids
            arrays["plaid_cutoffs.npy"] = self.codec.cutoffs
            arrays["plaid_weights.npy"] = self.codec.weights
            arrays["plaid_trained_on.npy"] = np.asarray([self.trained_on], dtype=np.int64)
        return arrays

    def load_arrays(self, order: Sequence[int], arrays: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`to_arrays` (``ValueError`` names the bad file)."""
        if "plaid_centroids.npy" in arrays:
            centroids = arrays["plaid_centroids.npy"]
            if centroids.ndim != 2 or centroids.shape[1] != self.dim:
                raise ValueError(
                    f"plaid_centroids.npy: shape {list(centroids.shape)}, dimension {self.dim} expected"
                )
            try:
                cutoffs, weights = arrays["plaid_cutoffs.npy"], arrays["plaid_weights.npy"]
                self._set_codec(ResidualCodec(centroids, cutoffs, weights, self.nbits))
            except KeyError as exc:
                raise ValueError(f"{exc.args[0]}: missing") from exc
            self.trained_on = int(arrays.get("plaid_trained_on.npy", np.asarray([len(centroids)]))[0])
        elif len(order):
            raise ValueError("plaid_centroids.npy: missing")
        self._raw = None if len(order) else {}  # a loaded store has its codes only
        super().load_arrays(order, arrays)
        if self.codec is not None and len(self._codes):
            ids = self.row_ids(self._codes)
            if ids.max() >= self.codec.num_centroids:
                raise ValueError("token_codes.npy: centroid ids beyond plaid_centroids.npy")
