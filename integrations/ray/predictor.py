"""`PoolingPredictor`: the engine inside Ray Data's ``map_batches``, one engine per actor.

    ds = ray.data.read_parquet("corpus/")                       # a "text" column
    ds = map_pooling(ds, task="embed", concurrency=4, num_gpus=1)  # + "embedding" column

or, with Ray Data's own call::

    ds.map_batches(PoolingPredictor, fn_constructor_kwargs={"task": "embed"},
                   compute=ray.data.ActorPoolStrategy(size=4), num_gpus=1, batch_format="pyarrow")

Ray Data schedules the batches, restarts a failed actor and retries its batches; the class
only turns a batch into engine calls and the results into Arrow columns.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .._colbert import check_document_lengths
from .._engines import truncation
from .columns import column_of, column_strings, token_vectors_column, vectors_column
from .engine_options import check_engine_options, load_engine

logger = logging.getLogger(__name__)

TASKS = ("embed", "token_embed", "score")
"""What a :class:`PoolingPredictor` computes: one vector per text, ColBERT token vectors per
text, or a relevance score per ``(query, text)`` row."""


@dataclass(frozen=True)
class PredictorSettings:
    """What a :class:`PoolingPredictor` does, checked on the driver before any actor starts.

    Attributes:
        model: a local folder or a Hugging Face Hub id.
        task: ``"embed"``, ``"token_embed"`` or ``"score"``.
        text_column: the input texts (documents for ``token_embed``).
        query_column: the queries of ``score`` (scored row by row against ``text_column``).
        output_column: the column added (default: the task's name, ``embedding`` for embed).
        colbert: :class:`~vllm_pool.retrievers.ColBERTConfig` fields for ``token_embed``
            (document length, markers, punctuation skipping); default ``ColBERTConfig()``.
        dimensions: Matryoshka output size (``embed``).
        normalize: L2-normalize embeddings (``None``: the model's default; ``embed``).
        truncate_prompt_tokens: cut each text to this many tokens.
        truncate: without ``truncate_prompt_tokens``, cut texts to the model's limit (else an
            over-long text fails the batch with the engine's ``ValueError``; for
            ``token_embed``, a document over ``doc_maxlen``).
        engine: engine options, fields of ``vllm_pool.EngineArgs`` (``dtype``, ``device``, ...).
    """

    model: str
    task: str = "embed"
    text_column: str = "text"
    query_column: str = "query"
    output_column: str | None = None
    colbert: Mapping[str, Any] | None = None
    dimensions: int | None = None
    normalize: bool | None = None
    truncate_prompt_tokens: int | None = None
    truncate: bool = True
    engine: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r} is not supported: PoolingPredictor runs {list(TASKS)}")
        if self.task != "token_embed" and self.colbert is not None:
            raise ValueError("colbert settings apply to task='token_embed' only")
        if self.task != "embed" and (self.dimensions is not None or self.normalize is not None):
            raise ValueError("dimensions and normalize apply to task='embed' only")
        object.__setattr__(self, "engine", check_engine_options(self.engine, self.model or None))
        if self.task == "token_embed":  # checked here; the checkpoint's own settings fill the rest on load
            given = self.colbert
            self.colbert_config()
            object.__setattr__(self, "colbert", asdict(given) if is_dataclass(given) else dict(given or {}))

    @property
    def output(self) -> str:
        """The name of the column the predictor adds."""
        return self.output_column or {"embed": "embedding"}.get(self.task, self.task)

    def colbert_config(self) -> Any:
        """The :class:`~vllm_pool.retrievers.ColBERTConfig` of ``token_embed``.

        Raises:
            TypeError: a field ``ColBERTConfig`` does not have.
        """
        from vllm_pool.retrievers import ColBERTConfig

        given = self.colbert or {}
        if isinstance(given, ColBERTConfig):
            return given
        try:
            return ColBERTConfig(**dict(given))
        except TypeError as exc:
            raise TypeError(f"bad colbert settings {dict(given)}: {exc}") from exc


class PoolingPredictor:
    """A callable class for ``Dataset.map_batches``: adds an ``embedding``, ``token_embed`` or
    ``score`` column to each batch.

    The engine is loaded once, when Ray creates the actor. Batches may be Arrow tables
    (recommended: ``batch_format="pyarrow"``), dicts of numpy arrays or pandas DataFrames;
    Arrow in gives Arrow out (``fixed_size_list<float32>[D]`` embeddings,
    ``list<fixed_size_list<float32>[D]>`` token vectors, ``float32`` scores), numpy in gives
    numpy out (a ``[N, D]`` float32 array, one ``[L_i, D]`` array per row, ``[N]`` scores).

    Args:
        model: a local folder or a Hugging Face Hub id (default: all-MiniLM-L6-v2).
        task: ``"embed"``, ``"token_embed"`` (ColBERT document vectors, encoded by
            :class:`~vllm_pool.retrievers.ColBERTEncoder` with ``colbert`` settings) or
            ``"score"`` (``query_column`` against ``text_column``, row by row).
        text_column: the column of input texts.
        query_column: the column of queries for ``score``.
        output_column: the column added (default ``embedding`` / ``token_embed`` / ``score``).
        colbert: ``ColBERTConfig`` fields (or a ``ColBERTConfig``) for ``token_embed``.
        dimensions: Matryoshka output size for ``embed``.
        normalize: L2-normalize ``embed`` outputs (``None``: the model's default).
        truncate_prompt_tokens: cut each text to this many tokens.
        truncate: without ``truncate_prompt_tokens``, cut texts to the model's limit (default,
            as the LangChain / LlamaIndex classes do); ``False`` lets the engine's error through.
        **engine_options: fields of ``vllm_pool.EngineArgs`` (``dtype="bfloat16"``,
            ``max_num_seqs=...``), checked before the engine loads; an unknown name raises
            ``TypeError``.

    Raises:
        ValueError: an unknown task, or a task the model does not support.
    """

    def __init__(
        self,
        model: str | None = None,
        task: str = "embed",
        *,
        text_column: str = "text",
        query_column: str = "query",
        output_column: str | None = None,
        colbert: Any = None,
        dimensions: int | None = None,
        normalize: bool | None = None,
        truncate_prompt_tokens: int | None = None,
        truncate: bool = True,
        **engine_options: Any,
    ) -> None:
        from vllm_pool import DEFAULT_MODEL, PoolingParams

        self.settings = PredictorSettings(
            model=str(model or DEFAULT_MODEL),
            task=task,
            text_column=text_column,
            query_column=query_column,
            output_column=output_column,
            colbert=colbert,
            dimensions=dimensions,
            normalize=normalize,
            truncate_prompt_tokens=truncate_prompt_tokens,
            truncate=truncate,
            engine=engine_options,
        )
        s = self.settings
        self.llm = load_engine(s.model, s.engine)
        supported = tuple(self.llm.get_supported_tasks())
        if task not in supported and not (task == "score" and "embed" in supported):  # cosine score
            raise ValueError(f"{s.model} does not support task {task!r} (it supports {list(supported)})")
        self.params = PoolingParams(dimensions=dimensions, normalize=normalize) if task == "embed" else None
        self.encoder = None
        if task == "token_embed":
            from vllm_pool.retrievers import ColBERTEncoder, EngineTokenEncoder

            tokens = EngineTokenEncoder(self.llm)
            self.encoder = ColBERTEncoder(tokens, ColBERTEncoder.default_config(tokens, **s.colbert))
        logger.info("PoolingPredictor ready: %s, task %s", s.model, task)

    # -- one batch -----------------------------------------------------------------------
    def __call__(self, batch: Any) -> Any:
        """Add the output column to ``batch`` (an Arrow table, dict of numpy arrays or pandas
        DataFrame) and return it in the same family (pandas comes back as Arrow)."""
        if hasattr(batch, "columns") and hasattr(batch, "iloc"):  # pandas
            batch = pa.Table.from_pandas(batch, preserve_index=False)
        s = self.settings
        texts = column_strings(column_of(batch, s.text_column), s.text_column)
        if self.settings.task == "embed":
            result: Any = self._embed(texts)
        elif self.settings.task == "token_embed":
            result = self._token_embed(texts)
        else:
            queries = column_strings(column_of(batch, s.query_column), s.query_column)
            result = self._score(queries, texts)
        return _with_column(batch, s.output, result, self.llm.embedding_dim)

    def _embed_width(self) -> int:
        """The width of this predictor's embeddings: ``dimensions`` (the call's, else the
        model's pooler default), else the embed head's output size."""
        from vllm_pool import PoolingParams

        pooler = self.llm.poolers.get("embed")
        resolved = pooler.resolve(self.params or PoolingParams())
        return int(resolved.dimensions or pooler.head.out_dim)

    def _embed(self, texts: list[str]) -> np.ndarray:
        if not texts:  # an empty batch has the columns of a full one (Ray concatenates them)
            return np.zeros((0, self._embed_width()), dtype=np.float32)
        outs = self.llm.encode(
            texts,
            pooling_task="embed",
            pooling_params=self.params,
            use_tqdm=False,
            truncate_prompt_tokens=truncation(self.settings.truncate, self.settings.truncate_prompt_tokens),
        )
        return np.stack([o.outputs.data.detach().float().cpu().numpy() for o in outs])  # [N, D]

    def _token_embed(self, texts: list[str]) -> list[np.ndarray]:
        if not texts:
            return []
        if not self.settings.truncate:
            check_document_lengths(self.encoder, texts)
        return self.encoder.encode_documents(texts)  # one [L_i, D] per text

    def _score(self, queries: list[str], texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.float32)
        s = self.settings
        truncate = truncation(s.truncate, s.truncate_prompt_tokens)
        outs = self.llm.score(queries, texts, use_tqdm=False, truncate_prompt_tokens=truncate)
        return np.asarray([o.outputs.score for o in outs], dtype=np.float32)  # [N]


def _with_column(batch: Any, name: str, result: Any, dim: int) -> Any:
    """``batch`` with the column ``name`` set to ``result`` (replacing one of that name)."""
    if isinstance(batch, pa.Table):
        if isinstance(result, list):
            column: Any = token_vectors_column(result, result[0].shape[1] if result else dim)
        elif result.ndim == 2:
            column = vectors_column(result)
        else:
            column = pa.array(result, type=pa.float32())
        if name in batch.column_names:
            return batch.set_column(batch.column_names.index(name), name, column)
        return batch.append_column(name, column)
    out = dict(batch)
    if isinstance(result, list):
        ragged = np.empty(len(result), dtype=object)
        ragged[:] = result
        out[name] = ragged
    else:
        out[name] = result
    return out
