"""Ray Data pipelines: pooling over a dataset, and an index built from it in shards.

    ds = ray.data.from_items([{"id": ..., "text": ..., "source": ...}, ...])
    ds = map_pooling(ds, task="embed", concurrency=2)          # + "embedding"
    index = build_index(ds, "index/", kind="dense")           # shards -> one DenseIndex

Ray Data does the scheduling and the fault handling (a failed actor is restarted and its
batches retried); these functions only choose its arguments.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from .predictor import PoolingPredictor, PredictorSettings
from .shards import write_shard

logger = logging.getLogger(__name__)

DEFAULT_VECTOR_COLUMN = {"dense": "embedding", "multivector": "token_embed"}
_PREDICTOR_FIELDS = (
    "text_column",
    "query_column",
    "output_column",
    "colbert",
    "dimensions",
    "normalize",
    "truncate_prompt_tokens",
    "truncate",
)


def map_pooling(
    ds: Any,
    model: str | None = None,
    task: str = "embed",
    *,
    concurrency: int | tuple[int, int] = 1,
    num_gpus: float = 0,
    num_cpus: float | None = None,
    batch_size: int = 256,
    max_restarts: int | None = None,
    max_task_retries: int | None = None,
    predictor_class: type[PoolingPredictor] = PoolingPredictor,
    predictor_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """``ds.map_batches(PoolingPredictor, ...)`` with an actor pool and Arrow batches.

    Everything is checked here, on the driver, before an actor starts.

    Args:
        ds: a ``ray.data.Dataset`` with a ``text`` column (``query`` too for ``score``).
        model: a local folder or a Hugging Face Hub id (default: all-MiniLM-L6-v2); on a
            cluster, a path every node can read or a hub id.
        task: ``"embed"``, ``"token_embed"`` or ``"score"``.
        concurrency: actors (an int), or ``(min, max)`` for an autoscaling pool.
        num_gpus: GPUs per actor (``1`` on a GPU cluster: one actor, one engine per GPU).
        num_cpus: CPUs per actor (default 1); the engine uses that many threads.
        batch_size: rows per call (the engine batches by tokens inside a call).
        max_restarts: restarts of a failed actor (``None``: Ray Data's default, unlimited).
        max_task_retries: retries of a batch whose actor died (``None``: Ray Data's default).
        predictor_class: :class:`PoolingPredictor` or a subclass of it (e.g. one that
            prepares the texts).
        predictor_kwargs: constructor arguments of a ``predictor_class`` of your own.
        **kwargs: the other arguments of :class:`PoolingPredictor` (``text_column``,
            ``colbert``, ``dimensions``...) and engine options (``dtype``, ``max_num_seqs``...).

    Returns:
        The lazy dataset with the output column added.
    """
    import ray.data

    predictor = {k: kwargs.pop(k) for k in _PREDICTOR_FIELDS if k in kwargs}
    PredictorSettings(model=str(model or ""), task=task, engine=kwargs, **predictor)  # raises early
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    size = concurrency if isinstance(concurrency, tuple) else (concurrency, concurrency)
    if len(size) != 2 or any(not isinstance(n, int) or n < 1 for n in size) or size[0] > size[1]:
        raise ValueError(f"concurrency must be an int >= 1 or a (min, max) pair, got {concurrency!r}")
    remote: dict[str, Any] = {}
    if max_restarts is not None:
        remote["max_restarts"] = max_restarts
    if max_task_retries is not None:
        remote["max_task_retries"] = max_task_retries
    if not (isinstance(predictor_class, type) and issubclass(predictor_class, PoolingPredictor)):
        raise TypeError(f"predictor_class must be PoolingPredictor or a subclass, got {predictor_class!r}")
    return ds.map_batches(
        predictor_class,
        fn_constructor_kwargs={
            "model": model,
            "task": task,
            **predictor,
            **kwargs,
            **(predictor_kwargs or {}),
        },
        compute=ray.data.ActorPoolStrategy(min_size=size[0], max_size=size[1]),
        batch_size=batch_size,
        batch_format="pyarrow",
        num_cpus=1 if num_cpus is None else num_cpus,
        num_gpus=num_gpus or None,
        **remote,
    )


def _exact_shard_kwargs(kind: str) -> dict[str, Any]:
    """Shards that will be merged keep the vectors as given: flat, fp32, not normalized."""
    exact: dict[str, Any] = {"index_type": "flat", "normalize": False, "use_gpu": False}
    if kind == "multivector":
        exact["storage"] = "fp32"
    return exact


def build_index(
    ds: Any,
    path: str | os.PathLike | None = None,
    *,
    kind: str = "dense",
    vector_column: str | None = None,
    id_column: str = "id",
    text_column: str = "text",
    metadata_columns: list[str] | None = None,
    rows_per_shard: int | None = None,
    merge: bool = True,
    shards_dir: str | os.PathLike | None = None,
    **index_kwargs: Any,
) -> Any:
    """Index a dataset of vectors: each block into a shard, then one index (or the shards).

    Each Ray Data block (or each ``rows_per_shard`` rows) becomes a shard folder in the
    package's persistence format, written by a Ray task. With ``merge=True`` the driver
    loads the shards and merges them, in id order, into one index with ``index_kwargs``
    (IVF / PQ / PLAID structures trained on all documents), saved at ``path`` when given.
    With ``merge=False`` the shards themselves, built with ``index_kwargs``, are the index:
    a sharded folder at ``path``, served by :class:`~vllm_pool.retrievers.ShardedIndex`
    (every shard searched, hits merged by score).

    Args:
        ds: a dataset with a vector column (the output of :func:`map_pooling`).
        path: where to save the index (required with ``merge=False``).
        kind: ``"dense"`` (an ``embedding`` column) or ``"multivector"`` (``token_embed``).
        vector_column: the column of vectors (default by ``kind``).
        id_column: string ids; when the dataset has no such column, ids are a hash of the
            text and metadata of each row (the same rows give the same ids on every run;
            identical rows become one document). One id on two rows with different
            metadata or vectors raises ``ValueError``.
        text_column: the texts, used for generated ids (not stored unless listed in
            ``metadata_columns``).
        metadata_columns: columns kept as metadata (default: every column without vectors,
            except the id and text columns; lists of strings or ints are metadata, lists
            of floats and tensor columns are vectors).
        rows_per_shard: rows per shard (default: one shard per block).
        merge: merge the shards into one index (default) or keep them.
        shards_dir: where merged shards are written (default: a temporary folder, removed
            after the merge). On a multi-node cluster use storage every node and the driver
            can read (NFS, a mounted bucket).
        **index_kwargs: options of :class:`~vllm_pool.retrievers.DenseIndex` /
            :class:`~vllm_pool.retrievers.MultiVectorIndex` (``index_type``, ``storage``,
            ``model_name``...).

    Returns:
        The merged index, or a :class:`~vllm_pool.retrievers.ShardedIndex`.
    """
    from vllm_pool.retrievers.sharded import ShardedIndex, index_class, merge_indexes, write_shards_file

    cls = index_class(kind)
    if not merge and path is None:
        raise ValueError("merge=False keeps the shards as the index: give the folder path to write them to")
    if rows_per_shard is not None and rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
    if merge:
        own_dir = shards_dir is None
        folder = Path(tempfile.mkdtemp(prefix="vllm-pool-shards-") if own_dir else shards_dir)
        shard_kwargs = _exact_shard_kwargs(kind)
    else:
        own_dir = False
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        folder = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        shard_kwargs = dict(index_kwargs)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        rows = _write_shards(ds, folder, kind, vector_column or DEFAULT_VECTOR_COLUMN[kind], id_column,
                             text_column, metadata_columns, rows_per_shard, shard_kwargs)  # fmt: skip
        names = sorted(r["shard"] for r in rows)
        logger.info("indexed %d rows into %d shards", sum(r["count"] for r in rows), len(names))
        if merge:
            shards = [cls.load(folder / n, use_gpu=False) for n in names]
            if not shards:
                raise ValueError("the dataset has no rows to index")
            index = merge_indexes(shards, **index_kwargs)
            if path is not None:
                index.save(path)
            return index
        _check_unique([list(r["ids"]) for r in rows])
        if not names:
            raise ValueError("the dataset has no rows to index")
        dim = cls.load(folder / names[0]).dim
        write_shards_file(folder, kind, dim, names)
        from vllm_pool.retrievers.index_folder import publish_folder

        publish_folder(folder, path)
        return ShardedIndex.load(path)
    finally:
        if own_dir or (not merge and folder.exists()):
            shutil.rmtree(folder, ignore_errors=True)


def _write_shards(
    ds: Any,
    folder: Path,
    kind: str,
    vector_column: str,
    id_column: str,
    text_column: str,
    metadata_columns: list[str] | None,
    rows_per_shard: int | None,
    shard_kwargs: dict[str, Any],
) -> list[dict[str, Any]]:
    fn_kwargs = {
        "folder": str(folder),
        "kind": kind,
        "vector_column": vector_column,
        "id_column": id_column,
        "text_column": text_column,
        "metadata_columns": metadata_columns,
        "shard_kwargs": shard_kwargs,
    }
    out = ds.map_batches(write_shard, batch_size=rows_per_shard, batch_format="pyarrow", fn_kwargs=fn_kwargs)
    return out.take_all()


def _check_unique(ids_per_shard: list[list[str]]) -> None:
    seen: set[str] = set()
    for ids in ids_per_shard:
        for doc_id in ids:
            if doc_id in seen:
                raise ValueError(
                    f"document id {doc_id!r} is in two shards: served shards need unique ids "
                    "(merge=True keeps one copy of identical rows)"
                )
            seen.add(doc_id)
