"""Building FAISS inner-product indexes by name, tuning them, and choosing CPU or GPU."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import faiss
import numpy as np

logger = logging.getLogger(__name__)

GPU_BUILDS = ("faiss-gpu-cu12", "faiss-gpu-cu11", "faiss-gpu")
"""PyPI builds of FAISS with GPU support; each installs the same ``faiss`` package as faiss-cpu."""


def mixed_builds() -> str | None:
    """The GPU build installed beside ``faiss-cpu``, if any: the two share the ``faiss``
    folder, so which build loads is undefined (a GPU index may silently run on the CPU) and
    uninstalling either breaks the other."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> bool:
        try:
            version(name)
        except PackageNotFoundError:
            return False
        return True

    if not installed("faiss-cpu"):
        return None
    return next((name for name in GPU_BUILDS if installed(name)), None)


if (_gpu_build := mixed_builds()) is not None:
    logger.warning(
        "faiss-cpu and %s are both installed and share the faiss package; keep one: "
        "pip uninstall -y faiss-cpu %s && pip install %s",
        _gpu_build, _gpu_build, _gpu_build,
    )  # fmt: skip

NAMED_TYPES = ("flat", "hnsw", "ivf", "ivfpq")
"""Short names; any other string is passed to ``faiss.index_factory``."""
PQ_MIN_TRAIN = 256
"""Vectors the k-means of an ``"ivfpq"`` index's 8-bit product quantizer needs (2**8 centroids)."""
REFINE = 10
"""Candidates per hit that a dense index of lossy codes takes from FAISS to score exactly."""


def lossy_codes(index_type: str) -> bool:
    """Whether FAISS scores ``index_type`` on lossy codes (product or scalar quantizers, LSH),
    not on the vectors: ``"ivfpq"`` or a factory string naming such a codec."""
    spec = str(index_type).upper().replace(" ", "")
    if spec == "IVFPQ":
        return True
    codec = spec.split(",")[-1] if "," in spec else spec
    return (
        any(name in codec for name in ("PQ", "SQ", "RQ", "LSH"))
        and "REFINE" not in spec
        and "RFLAT" not in codec
    )


def check_faiss_settings(nlist: object, nprobe: object, hnsw_m: object, ef_search: object) -> None:
    """Check the FAISS options of an index, before it is built (FAISS itself fails late on
    bad values, or aborts the process: ``hnsw_m=0``).

    Raises:
        TypeError: ``nprobe``, ``hnsw_m`` or ``ef_search`` is not an int (``bool`` included),
            or ``nlist`` is neither ``None`` nor an int.
        ValueError: one of them is below 1.
    """
    for name, value in (("nlist", nlist), ("nprobe", nprobe), ("hnsw_m", hnsw_m), ("ef_search", ef_search)):
        if value is None and name == "nlist":
            continue
        allowed = "None or an int >= 1" if name == "nlist" else "an int >= 1"
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be {allowed}, got {type(value).__name__} {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be {allowed}, got {value}")


def min_training_vectors(index_type: str, nlist: int | None, automatic: int) -> int:
    """Vectors an ``"ivf"`` / ``"ivfpq"`` index waits for before it is trained: ``nlist``
    (k-means needs a point per list; ``automatic`` when ``nlist`` is ``None``), and for
    ``"ivfpq"`` at least :data:`PQ_MIN_TRAIN`."""
    need = automatic if nlist is None else nlist
    return max(need, PQ_MIN_TRAIN) if index_type.lower() == "ivfpq" else need


def gpu_count() -> int:
    """Number of GPUs FAISS can use (0 for faiss-cpu)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def choose_gpu(use_gpu: bool | None) -> bool:
    """Decide whether to put an index on GPU.

    Args:
        use_gpu: ``True`` to require a GPU (``RuntimeError`` without one), ``False`` to stay
            on CPU, ``None`` for automatic (GPU when FAISS sees one).

    Returns:
        ``True`` when the index should be moved to the GPU(s).
    """
    n = gpu_count()
    if use_gpu is None:
        return n > 0
    if use_gpu and n == 0:
        raise RuntimeError("use_gpu=True but FAISS sees no GPU (install faiss-gpu: extra 'gpu')")
    return bool(use_gpu)


GPU_MAX_K = 2048
"""Neighbours a FAISS GPU index returns per query at most (its k-selection kernels)."""


def _layers(index: Any) -> Iterator[Any]:
    """``index`` and the indexes it wraps (an ``IndexIDMap``'s), outermost first."""
    for _ in range(4):
        yield index
        inner = getattr(index, "index", None)
        if inner is None:
            return
        index = faiss.downcast_index(inner)


def on_gpu(index: Any) -> bool:
    """Whether ``index`` (or the index it wraps: an ``IndexIDMap``) runs on a GPU."""
    names = (type(layer).__name__ for layer in _layers(index))
    return any(n.startswith("Gpu") or n in ("IndexReplicas", "IndexShards") for n in names)


def max_search_k(index: Any) -> int:
    """The most neighbours one search of ``index`` can ask for: all its vectors, or
    :data:`GPU_MAX_K` on a GPU (asking for more raises there); callers that need more
    score the documents exactly."""
    return min(index.ntotal, GPU_MAX_K) if on_gpu(index) else int(index.ntotal)


def to_device(index: faiss.Index, use_gpu: bool | None) -> faiss.Index:
    """Move ``index`` to all GPUs when :func:`choose_gpu` says so; HNSW stays on CPU."""
    if not choose_gpu(use_gpu):
        return index
    if _has_hnsw(index):  # FAISS has no GPU HNSW: with several GPUs its cloner would still
        # "succeed", copying the graph beside GPU storage that it then reads vector by vector
        if use_gpu:
            raise RuntimeError("an HNSW index has no GPU version in FAISS (use 'flat' or 'ivf' on a GPU)")
        logger.info("keeping the HNSW FAISS index on CPU")
        return index
    try:
        gpu_index = faiss.index_cpu_to_all_gpus(index)
    except (RuntimeError, AttributeError) as exc:  # e.g. HNSW has no GPU version
        if use_gpu:
            raise
        logger.info("keeping FAISS index on CPU (%s)", exc)
        return index
    logger.info("FAISS index moved to %d GPU(s)", gpu_count())
    return gpu_index


def _has_hnsw(index: Any) -> bool:
    """Whether ``index`` is an HNSW index or wraps one (``IndexIDMap``)."""
    return any(isinstance(layer, faiss.IndexHNSW) for layer in _layers(index))


def to_cpu(index: faiss.Index) -> faiss.Index:
    """A CPU copy of ``index`` for saving (the index itself when already on CPU)."""
    if gpu_count() > 0 and hasattr(faiss, "index_gpu_to_cpu"):
        try:
            return faiss.index_gpu_to_cpu(index)
        except RuntimeError:
            return index
    return index


def factory_string(
    index_type: str, dim: int, n_train: int, nlist: int | None, hnsw_m: int, codec: str = "Flat"
) -> str:
    """The ``faiss.index_factory`` string for ``index_type``.

    Args:
        index_type: ``"flat"``, ``"hnsw"``, ``"ivf"``, ``"ivfpq"`` (IVF with PQ codes of
            ``dim // 8`` bytes) or a FAISS factory string.
        dim: vector dimension.
        n_train: vectors available to train an IVF quantizer (sets the automatic ``nlist``).
        nlist: IVF lists; ``None`` = ``4 * sqrt(n_train)`` capped so each list gets >= 39
            training vectors.
        hnsw_m: HNSW graph degree.
        codec: how an ``"ivf"`` / ``"hnsw"`` index stores its vectors: ``"Flat"`` (fp32),
            ``"SQfp16"`` or ``"SQ8"`` (FAISS scalar quantizers: 2 / 1 bytes per dimension).

    Returns:
        A factory string; IDMap wrappers are added for types that need them.
    """
    name = index_type.lower()
    if name == "flat":
        return "IDMap,Flat"
    if name == "hnsw":
        return f"IDMap,HNSW{hnsw_m},{codec}"
    if name in ("ivf", "ivfpq"):
        if nlist is None:
            nlist = int(4 * math.sqrt(max(n_train, 1)))
            nlist = max(1, min(nlist, n_train // 39))
        if name == "ivf":
            return f"IVF{nlist},{codec}"
        m = max(m for m in range(1, max(1, dim // 8) + 1) if dim % m == 0)
        return f"IVF{nlist},PQ{m}"
    return index_type


def build_index(
    index_type: str,
    dim: int,
    train: np.ndarray,
    nlist: int | None = None,
    hnsw_m: int = 32,
    codec: str = "Flat",
) -> faiss.Index:
    """Create (and train when needed) an inner-product FAISS index that takes int64 labels.

    Args:
        index_type: see :func:`factory_string`.
        dim: vector dimension.
        train: ``[n, dim]`` fp32 vectors to train on (IVF / PQ); unused for flat and HNSW.
        nlist: IVF lists (see :func:`factory_string`).
        hnsw_m: HNSW graph degree.
        codec: vector codec of ``"ivf"`` / ``"hnsw"`` (see :func:`factory_string`).

    Returns:
        An empty, trained index supporting ``add_with_ids``.
    """
    spec = factory_string(index_type, dim, len(train), nlist, hnsw_m, codec)
    try:
        index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ValueError(f"bad FAISS index type {index_type!r} ({spec!r}): {exc}") from exc
    inner = faiss.downcast_index(index)
    if hasattr(inner, "do_polysemous_training"):
        inner.do_polysemous_training = False  # slow to train, unused by our searches
    if not index.is_trained:
        if len(train) == 0:
            raise ValueError(f"index type {index_type!r} needs training vectors in the first add")
        logger.info("training FAISS %s on %d vectors", spec, len(train))
        try:
            index.train(np.ascontiguousarray(train, dtype=np.float32))
        except RuntimeError as exc:
            raise ValueError(
                f"could not train FAISS {spec!r} on {len(train)} vectors (add more at once): {exc}"
            ) from exc
    if faiss.try_extract_index_ivf(index) is None and not _has_id_map(index):
        index = faiss.IndexIDMap(index)
    return index


def _has_id_map(index: faiss.Index) -> bool:
    return isinstance(faiss.downcast_index(index), (faiss.IndexIDMap, faiss.IndexIDMap2))


def set_search_params(index: faiss.Index, nprobe: int | None, ef_search: int | None) -> None:
    """Set IVF ``nprobe`` and HNSW ``efSearch`` where the index has them."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and nprobe is not None:
        ivf.nprobe = int(nprobe)
    inner = faiss.downcast_index(index)
    if isinstance(inner, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        inner = faiss.downcast_index(inner.index)
    if hasattr(inner, "hnsw") and ef_search is not None:
        inner.hnsw.efSearch = int(ef_search)


def try_remove(index: faiss.Index, labels: np.ndarray) -> bool:
    """Remove all vectors with these labels; ``False`` when the index cannot remove
    (HNSW, some GPU indexes), in which case the caller keeps them as tombstones."""
    if len(labels) == 0:
        return True
    try:
        index.remove_ids(np.ascontiguousarray(labels, dtype=np.int64))
    except RuntimeError:
        return False
    return True
