"""Per-task IO processors: input checks, pairing and output shaping, shared by every front.

As vLLM's pooling entrypoints share their request processing between ``LLM`` and the
OpenAI server, ``LLM.embed`` / ``classify`` / ``encode`` / ``reward`` / ``score`` and the
server's endpoints use the same processors here; the server keeps only HTTP (parsing,
limits, JSON). A processor turns caller inputs into a :class:`Prepared` job (tokenized
requests, the tasks to pool, and how to shape the pooled tensors into output objects) and
checks everything before any model work, so bad input never reaches the queue.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from vllm_pool.engine import chunked
from vllm_pool.engine.inputs import check_attention_masks, normalize_prompts
from vllm_pool.engine.lengths import renamed_prompts
from vllm_pool.engine.outputs import (
    REQUEST_OUTPUT_CLASSES,
    ClassificationOutput,
    EmbeddingOutput,
    PoolingOutput,
    PoolingRequestOutput,
    ScoringOutput,
    ScoringRequestOutput,
)
from vllm_pool.engine.params import PoolingParams, normalize_params, resolve_params
from vllm_pool.engine.scheduler import TaskSpec
from vllm_pool.engine.scoring import pair_up
from vllm_pool.engine.types import Request

if TYPE_CHECKING:
    from vllm_pool.engine.llm import LLM

Finish = Callable[[dict[str, list[torch.Tensor]]], list[PoolingRequestOutput[Any]]]


@dataclass
class Prepared:
    """A checked, tokenized job and how to shape its results.

    Attributes:
        requests: the tokenized prompts (or text pairs).
        tasks: ``{task: per-request params or None}`` for the engine core.
        finish: pooled tensors (``{task: [tensor per request]}``) -> output objects, one per
            caller input (for bi-encoder scores: one per pair).
    """

    requests: list[Request]
    tasks: TaskSpec
    finish: Finish

    @property
    def num_tokens(self) -> int:
        return sum(r.num_tokens for r in self.requests)


class PromptIO:
    """Prompts of one task in, one output per prompt out.

    Args:
        llm: the engine (its tokenizer, limits and poolers).
        task: the pooling task.
        output: the output class (``None``: the raw :class:`PoolingOutput`).
    """

    def __init__(self, llm: LLM, task: str, output: type | None = None) -> None:
        self.llm = _weak(llm)
        self.task = task
        self.output = output

    def check(
        self,
        prompts: object,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None,
        truncate_prompt_tokens: int | None = None,
    ) -> tuple[list[Any], list[PoolingParams]]:
        """Check prompts and params (no tokenizer): a ``TypeError`` / ``ValueError`` naming the input."""
        pooler = self.llm.poolers.get(self.task)
        items = normalize_prompts(prompts)
        check_attention_masks(items, self.task)
        params = normalize_params(pooling_params, len(items))
        return items, resolve_params(pooler, params, truncate_prompt_tokens)

    @property
    def lengths(self) -> chunked.LengthPolicy:
        """The task's length limits (``max_embed_len`` and chunked processing for ``embed``)."""
        return chunked.LengthPolicy.for_task(getattr(self.llm.model_config, "pooler", None), self.task)

    def tokenize(self, items: list[Any], params: list[PoolingParams], offset: int = 0) -> list[Request]:
        """Tokenize; with chunked processing, long prompts become consecutive chunk requests."""
        lengths = self.lengths
        requests = self.llm.input_processor(items, params, offset, **lengths.kwargs())
        if lengths.chunked:
            requests = chunked.split(requests, self.llm.input_processor.max_model_len)
        return requests

    def merged(
        self, requests: list[Request], data: list[torch.Tensor]
    ) -> tuple[list[Request], list[torch.Tensor]]:
        """One request and output per prompt (chunk outputs averaged; see ``engine.chunked``)."""
        return chunked.merge(requests, data) if self.lengths.chunked else (requests, data)

    def prepare(
        self,
        prompts: object,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        truncate_prompt_tokens: int | None = None,
    ) -> Prepared:
        items, params = self.check(prompts, pooling_params, truncate_prompt_tokens)
        return self.prepared(self.tokenize(items, params))

    def prepared(self, requests: list[Request]) -> Prepared:
        task = self.task
        return Prepared(requests, {task: None}, lambda results: self.finish(requests, results[task]))

    def finish(self, requests: list[Request], data: list[torch.Tensor]) -> list[PoolingRequestOutput[Any]]:
        """One output object per prompt (tensors kept; lists made when read)."""
        requests, data = self.merged(requests, data)
        ids = self.llm.request_ids(len(requests))
        wrap = self.output.from_base if self.output is not None else (lambda base: base)
        cls = REQUEST_OUTPUT_CLASSES.get(self.output, PoolingRequestOutput)  # type: ignore[arg-type]
        return [
            cls(rid, wrap(PoolingOutput(d)), prompt_token_ids=r.prompt_token_ids)
            for rid, r, d in zip(ids, requests, data)
        ]


class ScoreIO:
    """``score`` / ``rerank`` inputs: 1:1, 1:N or N:N text pairs in, one score per pair out.

    A cross-encoder (the ``score`` task) scores each pair jointly; a model with only the
    ``embed`` task falls back to the cosine similarity of the two texts' embeddings (each
    distinct text embedded once), as vLLM does.
    """

    def __init__(self, llm: LLM) -> None:
        self.llm = _weak(llm)

    @property
    def cross_encoder(self) -> bool:
        return "score" in self.llm.get_supported_tasks()

    def prepare(
        self,
        data_1: object,
        data_2: object,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        truncate_prompt_tokens: int | None = None,
        names: tuple[str, str] = ("data_1", "data_2"),
    ) -> Prepared:
        """Pair, check and tokenize (``names``: the inputs' names in error messages).

        ``pooling_params``: one for every pair, or a list of one per pair. With the cosine
        fallback, a text is embedded once per distinct params it is paired with.
        """
        llm = self.llm
        texts_1, texts_2 = pair_up(data_1, data_2, names, decode=llm.get_tokenizer().decode)
        per_pair = normalize_params(pooling_params, len(texts_1), "pairs")
        if self.cross_encoder:
            params = resolve_params(llm.poolers.get("score"), per_pair, truncate_prompt_tokens)
            return self.cross_prepared(llm.input_processor.pairs(texts_1, texts_2, params))
        if "embed" not in llm.get_supported_tasks():
            llm.poolers.get("score")  # raises, naming what the model supports
        keys_1 = [(t, p.key()) for t, p in zip(texts_1, per_pair)]
        keys_2 = [(t, p.key()) for t, p in zip(texts_2, per_pair)]
        params_of = dict(zip(keys_1 + keys_2, per_pair + per_pair))
        unique = list(params_of)  # (text, params) embedded once each
        embed = PromptIO(llm, "embed")
        texts, params = [t for t, _ in unique], [params_of[k] for k in unique]
        try:
            requests = embed.prepare(texts, params, truncate_prompt_tokens).requests
        except (ValueError, TypeError) as exc:  # name the caller's input, not the de-duplicated list's
            where = _caller_names(unique, (keys_1, keys_2), (data_1, data_2), names)
            renamed = renamed_prompts(exc, lambda i: where[i] if i < len(where) else None)
            if renamed is None:
                raise
            raise renamed from exc

        def finish(results: dict[str, list[torch.Tensor]]) -> list[PoolingRequestOutput[Any]]:
            by_key = dict(zip(unique, zip(*embed.merged(requests, results["embed"]))))
            v1, v2 = [by_key[k][1] for k in keys_1], [by_key[k][1] for k in keys_2]
            if len({v.shape for v in v1 + v2}) == 1:  # one size: [pairs, dim] at once
                scores = _cosine(torch.stack(v1), torch.stack(v2)).unbind(0)
            else:  # per-pair params with other dimensions: each pair at its own size
                scores = tuple(_cosine(a, b) for a, b in zip(v1, v2))
            ids = llm.request_ids(len(texts_1))
            return [
                ScoringRequestOutput(
                    rid,
                    ScoringOutput(s),
                    prompt_token_ids=by_key[a][0].prompt_token_ids + by_key[b][0].prompt_token_ids,
                )
                for rid, a, b, s in zip(ids, keys_1, keys_2, scores)
            ]

        return Prepared(requests, {"embed": None}, finish)

    def cross_prepared(self, requests: list[Request]) -> Prepared:
        """The job of a cross-encoder's tokenized pairs (one score per pair)."""
        return PromptIO(self.llm, "score", ScoringOutput).prepared(requests)


def _caller_names(
    unique: list[Any], keys: tuple[list[Any], list[Any]], data: tuple[object, object], names: tuple[str, str]
) -> list[str]:
    """The caller's name of each distinct text of a bi-encoder score job: where it first
    appears (``query``, ``text_2[3]``...); a side given as one text has no index."""
    first: dict[Any, str] = {}
    for side in (0, 1):
        single = isinstance(data[side], (str, dict))
        n = 1 if single else len(data[side])  # type: ignore[arg-type]
        for j, key in enumerate(keys[side]):
            if key not in first:  # a one-item first side is repeated for every pair: its item 0
                first[key] = names[side] if single else f"{names[side]}[{min(j, n - 1)}]"
    return [first[k] for k in unique]


def task_processors(llm: LLM) -> dict[str, Any]:
    """The processors of every public verb, by name."""
    return {
        "embed": PromptIO(llm, "embed", EmbeddingOutput),
        "classify": PromptIO(llm, "classify", ClassificationOutput),
        "reward": PromptIO(llm, "token_classify"),
        "score": ScoreIO(llm),
    }


def _weak(llm: LLM) -> LLM:
    """A proxy of ``llm`` for the processors it owns: no reference cycle, so that dropping
    the last reference to an engine frees its model at once (not at the next full GC pass)."""
    return llm if isinstance(llm, weakref.ProxyTypes) else weakref.proxy(llm)  # type: ignore[return-value]


def encode_processor(llm: LLM, task: str) -> PromptIO:
    """Raw pooled tensors (``LLM.encode``, the server's ``/pooling``) for ``task``."""
    return PromptIO(llm, task)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)
