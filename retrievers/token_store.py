"""Contiguous storage of document token vectors, optionally compressed.

Rows of every document sit next to each other in one numpy array; a document is a
``(start, length)`` span. Codecs: ``fp32`` (exact), ``fp16``, ``int8`` (symmetric,
one fp32 scale per vector) and ``pq`` (FAISS product quantizer, trained on the first add).
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np
import torch

STORAGES = ("fp32", "fp16", "int8", "pq")
PQ_NBITS_MAX = 16
"""Largest ``pq_nbits`` (FAISS allows 24, but the first add must hold ``2**pq_nbits`` vectors
to train the codebooks, which hold ``dim * 2**pq_nbits`` floats)."""
FP16_MAX = float(np.finfo(np.float16).max)  # 65504


def default_pq_m(dim: int) -> int:
    """PQ sub-quantizers: the largest divisor of ``dim`` that is at most ``dim // 8``."""
    for m in range(max(1, dim // 8), 0, -1):
        if dim % m == 0:
            return m
    return 1


def check_pq_settings(dim: int, pq_m: object, pq_nbits: object) -> tuple[int, int]:
    """``(pq_m, pq_nbits)`` of a ``"pq"`` store as ints, ``pq_m=None`` resolved by :func:`default_pq_m`.

    Raises:
        TypeError, ValueError: ``pq_m`` is neither ``None`` nor a positive int dividing ``dim``,
            or ``pq_nbits`` is not an int from 1 to :data:`PQ_NBITS_MAX`.
    """
    m = default_pq_m(dim) if pq_m is None else pq_m
    for name, value in (("pq_m", m), ("pq_nbits", pq_nbits)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if m < 1 or dim % m:
        raise ValueError(
            f"pq_m must be None (automatic) or a positive int dividing the dimension {dim}, got {m}"
        )
    if not 1 <= pq_nbits <= PQ_NBITS_MAX:
        raise ValueError(f"pq_nbits (bits per PQ code) must be from 1 to {PQ_NBITS_MAX}, got {pq_nbits}")
    return int(m), int(pq_nbits)


def check_fp16_range(codes: np.ndarray, lengths: Sequence[int]) -> None:
    """Raise ``ValueError`` naming the first document row whose fp16 ``codes`` overflowed to ``inf``.

    Args:
        codes: ``float16 [T, dim]``, the rows of the documents concatenated.
        lengths: the rows of each document (``doc_vectors[i]`` of the index's ``add``).
    """
    finite = np.isfinite(codes).all(axis=1)  # [T]
    if finite.all():
        return
    row = int(np.flatnonzero(~finite)[0])
    ends = np.cumsum(lengths)
    doc = int(np.searchsorted(ends, row, side="right"))
    raise ValueError(
        f"doc_vectors[{doc}][{row - int(ends[doc]) + lengths[doc]}] contains infinite values as float16 "
        f"(storage='fp16' holds finite values of magnitude at most {FP16_MAX:g} only: "
        "use storage='fp32' or normalize=True)"
    )


class TokenStore:
    """Token vectors of many documents in one growable array.

    Args:
        dim: vector dimension.
        storage: ``"fp32"``, ``"fp16"``, ``"int8"`` or ``"pq"``.
        pq_m: PQ sub-quantizers, a divisor of ``dim`` (``None``: :func:`default_pq_m`).
        pq_nbits: bits per PQ code, 1 to 16 (the first add needs at least ``2**pq_nbits``
            vectors). Both are checked for ``"pq"`` storage only (the others ignore them).

    Raises:
        ValueError: a ``float16`` row overflows (``add`` with ``"fp16"`` storage; nothing is added).
    """

    def __init__(self, dim: int, storage: str = "fp32", pq_m: int | None = None, pq_nbits: int = 8) -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.dim = dim
        self.storage = storage
        self.pq_m, self.pq_nbits = default_pq_m(dim) if pq_m is None else pq_m, pq_nbits
        self._pq_width = 0  # bytes of a PQ code, as FAISS packs them: ceil(pq_m * pq_nbits / 8)
        if storage == "pq":
            self.pq_m, self.pq_nbits = check_pq_settings(dim, pq_m, pq_nbits)
            self._pq_width = faiss.ProductQuantizer(dim, self.pq_m, self.pq_nbits).code_size
        self._pq: faiss.ProductQuantizer | None = None
        self._codes = np.zeros((0, *self._code_shape()), dtype=self._code_dtype())
        self._scales = np.zeros(0, dtype=np.float32)  # int8 only
        self._n = 0  # rows in use (live + dead)
        self._span: dict[int, tuple[int, int]] = {}  # slot -> (start, length)
        self._dead = 0
        self._segments: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # cache of segments()
        # made anew with each full build of segments(), kept while adds only append to it: a
        # cache derived from segments() stays valid for the documents it covered while this holds
        self._segments_epoch = object()
        self._mirror: torch.Tensor | None = None  # decoded rows on a device (see device_rows)
        self._mirror_n = 0  # rows of the mirror in sync

    def _code_shape(self) -> tuple[int]:
        return (self._pq_width,) if self.storage == "pq" else (self.dim,)

    def _code_dtype(self) -> type:
        return {"fp32": np.float32, "fp16": np.float16, "int8": np.int8, "pq": np.uint8}[self.storage]

    # -- codec ---------------------------------------------------------------------------
    def _encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self.storage == "fp32":
            return x, None
        if self.storage == "fp16":
            with np.errstate(over="ignore"):  # overflow is reported by add, by row
                return x.astype(np.float16), None
        if self.storage == "int8":
            scale = np.abs(x).max(axis=1) / 127.0  # [n]
            scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
            return np.round(x / scale[:, None]).astype(np.int8), scale
        if self._pq is None:
            self._train_pq(x)
        return self._pq.compute_codes(np.ascontiguousarray(x)), None

    def _train_pq(self, x: np.ndarray) -> None:
        if len(x) < 2**self.pq_nbits:
            raise ValueError(
                f"PQ storage needs at least {2**self.pq_nbits} token vectors in the first add "
                f"to train its codebooks, got {len(x)}"
            )
        pq = faiss.ProductQuantizer(self.dim, self.pq_m, self.pq_nbits)
        pq.cp.niter = 15  # k-means iterations (FAISS default 25)
        if len(x) > 64 * 2**self.pq_nbits:  # a sample is enough to train the codebooks
            rows = np.random.default_rng(0).choice(len(x), 64 * 2**self.pq_nbits, replace=False)
            x = x[np.sort(rows)]
        pq.train(np.ascontiguousarray(x, dtype=np.float32))
        self._pq = pq

    def decode_rows(self, codes: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
        """Decode stored rows to ``float32 [n, dim]``."""
        if self.storage == "int8":
            return codes.astype(np.float32) * scales[:, None]
        if self.storage == "pq":
            return self._pq.decode(np.ascontiguousarray(codes))
        return codes.astype(np.float32, copy=False)

    # -- mutation ------------------------------------------------------------------------
    def add(self, slots: Sequence[int], docs: Sequence[np.ndarray]) -> None:
        """Append the ``[L_i, dim]`` fp32 token matrices of documents ``slots``."""
        flat = np.concatenate(docs) if docs else np.zeros((0, self.dim), np.float32)
        codes, scales = self._encode(flat)
        if self.storage == "fp16":
            check_fp16_range(codes, [len(d) for d in docs])
        self._reserve(len(flat))  # may compact, which drops the segments() cache
        self._codes[self._n : self._n + len(flat)] = codes
        if scales is not None:
            self._scales[self._n : self._n + len(flat)] = scales
        self._append_segments([int(s) for s in slots], [len(d) for d in docs])
        start = self._n
        for slot, doc in zip(slots, docs, strict=True):
            self._span[int(slot)] = (start, len(doc))
            start += len(doc)
        self._n = start

    def _append_segments(self, slots: list[int], lengths: list[int]) -> None:
        """Extend the cached :meth:`segments` by documents ``slots`` about to be stored from row
        ``self._n`` on (after every stored row, so they sort last), or drop the cache when a slot
        is already stored or repeats (its old span would stay listed)."""
        if self._segments is None:
            return
        if len(set(slots)) != len(slots) or any(s in self._span for s in slots):
            self._segments = None
            return
        n = np.asarray(lengths, dtype=np.int64)
        new = (self._n + np.cumsum(n) - n, n, np.asarray(slots, dtype=np.int64).reshape(-1))
        self._segments = tuple(np.concatenate([old, add]) for old, add in zip(self._segments, new))

    def _reserve(self, extra: int) -> None:
        if self._n + extra <= len(self._codes):
            return
        if self._dead > self._n // 2:
            self.compact()
            if self._n + extra <= len(self._codes):
                return
        cap = max(2 * len(self._codes), self._n + extra, 1024)
        codes = np.zeros((cap, *self._code_shape()), dtype=self._code_dtype())
        codes[: self._n] = self._codes[: self._n]
        self._codes = codes
        if self.storage == "int8":
            scales = np.zeros(cap, dtype=np.float32)
            scales[: self._n] = self._scales[: self._n]
            self._scales = scales

    def remove(self, slots: Sequence[int]) -> None:
        """Forget documents (their rows are reclaimed by :meth:`compact`)."""
        for slot in slots:
            span = self._span.pop(int(slot), None)
            if span is not None:
                self._dead += span[1]
                self._segments = None  # (kept when nothing was stored: an add overwriting nothing)

    def compact(self, order: Sequence[int] | None = None) -> None:
        """Rewrite the rows contiguously, documents in ``order`` (default: current order)."""
        order = list(self._span) if order is None else [int(s) for s in order]
        codes, scales, lengths = self.gather(order)
        self._codes = codes
        self._scales = scales if scales is not None else np.zeros(0, np.float32)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(order) else []
        self._span = {s: (int(st), int(n)) for s, st, n in zip(order, starts, lengths, strict=True)}
        self._n = len(codes)
        self._dead = 0
        self._segments = None
        self._mirror = None

    # -- reading -------------------------------------------------------------------------
    def __contains__(self, slot: object) -> bool:
        return slot in self._span

    @property
    def num_vectors(self) -> int:
        """Live token vectors."""
        return self._n - self._dead

    def gather(self, slots: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Raw codes of documents ``slots`` concatenated: ``(codes, scales, lengths)``."""
        spans = [self._span[int(s)] for s in slots]
        lengths = np.asarray([n for _, n in spans], dtype=np.int64)
        if spans:
            codes = np.concatenate([self._codes[st : st + n] for st, n in spans])
        else:
            codes = self._codes[:0].copy()
        scales = None
        if self.storage == "int8":
            scales = (
                np.concatenate([self._scales[st : st + n] for st, n in spans])
                if spans
                else np.zeros(0, np.float32)
            )
        return codes, scales, lengths

    def segments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The live documents in row order: ``(starts, lengths, slots)``, each ``int64 [n]``."""
        if self._segments is None:
            self._segments = self._build_segments()
            self._segments_epoch = object()
        return self._segments

    def _build_segments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`segments` from scratch (a loop over every document)."""
        spans = np.asarray([(st, n, slot) for slot, (st, n) in self._span.items()], dtype=np.int64)
        spans = spans.reshape(-1, 3)
        spans = spans[np.argsort(spans[:, 0], kind="stable")]
        return spans[:, 0].copy(), spans[:, 1].copy(), spans[:, 2].copy()

    def decode_range(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` decoded to ``float32`` (a view for fp32 storage)."""
        scales = self._scales[start:stop] if self.storage == "int8" else None
        return self.decode_rows(self._codes[start:stop], scales)

    def device_rows(self, device: torch.device) -> torch.Tensor:
        """All rows decoded, held on ``device``: fp16 on a GPU, fp32 on the CPU (a torch view).

        The copy is kept: rows added later are uploaded incrementally, a compaction makes a
        new copy. Dead rows stay in it, as in the store, until compaction.
        """
        device = torch.empty(0, device=device).device  # as tensors name it ("cuda" -> "cuda:0"),
        # or the kept copy would never match the device asked for, and be made again each search
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        if self._mirror is None or self._mirror.device != device or len(self._mirror) < self._n:
            capacity = max(len(self._codes), self._n)
            grown = torch.empty((capacity, self.dim), dtype=dtype, device=device)
            if self._mirror is not None and self._mirror.device == device:
                grown[: self._mirror_n] = self._mirror[: self._mirror_n]
            else:
                self._mirror_n = 0
            self._mirror = grown
        for start in range(self._mirror_n, self._n, 1 << 16):  # upload in chunks
            stop = min(start + (1 << 16), self._n)
            self._mirror[start:stop] = torch.from_numpy(self.decode_range(start, stop)).to(device, dtype)
        self._mirror_n = self._n
        return self._mirror[: self._n]

    def spans(self, slots: Sequence[int]) -> np.ndarray:
        """Row indices ``int64 [T]`` of the documents ``slots``, concatenated in that order."""
        spans = [self._span[int(s)] for s in slots]
        if not spans:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(st, st + n, dtype=np.int64) for st, n in spans])

    def lengths(self, slots: Sequence[int]) -> np.ndarray:
        """Token vectors of each of the documents ``slots``, ``int64 [n]``."""
        return np.fromiter((self._span[int(s)][1] for s in slots), dtype=np.int64, count=len(slots))

    def span_tokens(self, slots: Sequence[int]) -> int:
        """Token vectors held by documents ``slots``."""
        return sum(self._span[int(s)][1] for s in slots)

    def decode(self, slots: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Token vectors of documents ``slots``: ``(float32 [T, dim], lengths int64 [n])``."""
        codes, scales, lengths = self.gather(slots)
        return self.decode_rows(codes, scales), lengths

    def bytes_per_vector(self) -> float:
        """Bytes stored per token vector (codes plus scale)."""
        size = int(np.prod(self._code_shape())) * np.dtype(self._code_dtype()).itemsize
        return float(size + (4 if self.storage == "int8" else 0))

    # -- persistence ---------------------------------------------------------------------
    def to_arrays(self, order: Sequence[int]) -> dict[str, np.ndarray]:
        """``.npy`` arrays holding documents ``order`` contiguously."""
        codes, scales, lengths = self.gather(order)
        arrays = {"token_codes.npy": codes, "doc_lengths.npy": lengths}
        if scales is not None:
            arrays["token_scales.npy"] = scales
        if self._pq is not None:
            arrays["pq_centroids.npy"] = faiss.vector_to_array(self._pq.centroids)
        return arrays

    def load_arrays(self, order: Sequence[int], arrays: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`to_arrays` (shapes are checked; ``ValueError`` names the file)."""
        codes = arrays["token_codes.npy"]
        lengths = arrays["doc_lengths.npy"].astype(np.int64)
        if codes.shape[1:] != self._code_shape() or codes.dtype != self._code_dtype():
            raise ValueError(
                f"token_codes.npy: shape {list(codes.shape)} / dtype {codes.dtype} "
                f"do not match {self.storage} storage of dimension {self.dim}"
            )
        if lengths.ndim != 1 or (lengths < 0).any():
            raise ValueError(f"doc_lengths.npy: shape {list(lengths.shape)} or negative lengths")
        if len(lengths) != len(order) or int(lengths.sum()) != len(codes):
            raise ValueError(
                f"doc_lengths.npy: {len(lengths)} documents summing to "
                f"{int(lengths.sum())} rows, expected {len(order)} / {len(codes)}"
            )
        if self.storage == "int8":
            scales = arrays.get("token_scales.npy")
            if scales is None or scales.shape != (len(codes),):
                raise ValueError("token_scales.npy: missing or wrong length")
            self._scales = scales.astype(np.float32)
        if self.storage == "pq":
            centroids = arrays.get("pq_centroids.npy")
            expected = self.dim * 2**self.pq_nbits
            if centroids is None or centroids.size != expected:
                raise ValueError(f"pq_centroids.npy: missing or not {expected} values")
            pq = faiss.ProductQuantizer(self.dim, self.pq_m, self.pq_nbits)
            faiss.copy_array_to_vector(centroids.astype(np.float32).ravel(), pq.centroids)
            self._pq = pq
        self._codes = codes
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(order) else []
        self._span = {int(s): (int(st), int(n)) for s, st, n in zip(order, starts, lengths, strict=True)}
        self._n = len(codes)
        self._dead = 0
        self._segments = None
        self._mirror = None
