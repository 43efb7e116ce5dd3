"""Long-text embedding by chunks, as vLLM's ``enable_chunked_processing`` does.

With ``pooler_config={"enable_chunked_processing": True, "max_embed_len": N}``, an ``embed``
prompt of up to ``N`` tokens is accepted even when it is longer than ``max_model_len``:

- the prompt is tokenized once, special tokens included, and its token ids are cut into
  consecutive chunks of ``max_model_len`` tokens (no special tokens are added per chunk: the
  first chunk starts with the prompt's ``[CLS]`` / BOS, the last ends with its ``[SEP]`` / EOS);
- each chunk runs through the model and the model's own pooler (its pooling type, head,
  Matryoshka slice and normalization), as any prompt does;
- the chunk outputs are averaged, each weighted by its token count, in float32. The average
  is not normalized again (vLLM returns it as is), so a normalized model's long-text
  embedding has a norm of at most 1.

A prompt within ``max_model_len`` is one chunk: its output is the usual one. Over
``max_embed_len`` (or over ``max_model_len`` when ``max_embed_len`` is not set) the prompt is
rejected with vLLM's message. Only the ``embed`` task is chunked (``LLM.embed``,
``LLM.encode(pooling_task="embed")``, the bi-encoder fallback of ``LLM.score``,
``/v1/embeddings``, ``/pooling`` with ``task=embed``); other tasks keep the plain limit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from vllm_pool.engine.types import Request


@dataclass(frozen=True)
class LengthPolicy:
    """How long a prompt of one task may be (the keywords of ``InputProcessor.__call__``).

    Attributes:
        task: the pooling task.
        max_embed_len: ``pooler_config.max_embed_len`` for ``embed`` (else ``None``).
        chunked: chunked processing is on for this task.
    """

    task: str
    max_embed_len: int | None = None
    chunked: bool = False

    @classmethod
    def for_task(cls, pooler_config: Any, task: str) -> LengthPolicy:
        if task != "embed" or pooler_config is None:
            return cls(task)
        return cls(
            task,
            getattr(pooler_config, "max_embed_len", None),
            bool(getattr(pooler_config, "enable_chunked_processing", False)),
        )

    def kwargs(self) -> dict[str, Any]:
        return {"task": self.task, "max_embed_len": self.max_embed_len, "chunked": self.chunked}


def split(requests: list[Request], chunk_len: int) -> list[Request]:
    """Each request longer than ``chunk_len`` tokens as consecutive chunk requests.

    Chunks keep their prompt's ``index`` (so :func:`merge` can find them again); a leading
    instruction stays excluded from pooling in the chunks it covers.
    """
    out: list[Request] = []
    for r in requests:
        ids = r.prompt_token_ids
        if len(ids) <= chunk_len:
            out.append(r)
            continue
        for start in range(0, len(ids), chunk_len):
            out.append(
                replace(
                    r,
                    prompt_token_ids=ids[start : start + chunk_len],
                    token_type_ids=None,
                    prompt=None,
                    instruction_len=min(max(r.instruction_len - start, 0), chunk_len - 1),
                    attention_mask=None,
                )
            )
    return out


def merge(requests: list[Request], data: list[torch.Tensor]) -> tuple[list[Request], list[torch.Tensor]]:
    """One request and one output per prompt: chunk outputs (consecutive requests with the
    same ``index``) averaged with their token counts as weights (float32)."""
    merged_requests: list[Request] = []
    merged_data: list[torch.Tensor] = []
    i = 0
    while i < len(requests):
        j = i + 1
        while j < len(requests) and requests[j].index == requests[i].index:
            j += 1
        if j == i + 1:
            merged_requests.append(requests[i])
            merged_data.append(data[i])
        else:
            weights = [requests[k].num_tokens for k in range(i, j)]
            total = torch.zeros_like(data[i], dtype=torch.float32)
            for k, w in zip(range(i, j), weights):
                total += data[k].to(torch.float32) * w  # [dim]
            ids = [t for k in range(i, j) for t in requests[k].prompt_token_ids]
            first = requests[i]
            merged_requests.append(replace(first, prompt_token_ids=ids))
            merged_data.append(total / sum(weights))
        i = j
    return merged_requests, merged_data


def num_prompts(requests: list[Request]) -> int:
    """Prompts of ``requests``: a prompt's chunks are consecutive requests with its ``index``
    (the outputs :func:`merge` makes)."""
    return sum(1 for i, r in enumerate(requests) if i == 0 or requests[i - 1].index != r.index)


def prompt_progress(
    update: Callable[[int], Any] | None, requests: list[Request]
) -> Callable[[int], None] | None:
    """A job's ``on_batch`` that advances a progress bar by prompts, not chunk requests.

    The engine reports how many of the job's requests each batch ran, not which: the prompts
    done are counted in proportion (rounded down), and reach :func:`num_prompts` exactly when
    every request has run, so a bar of prompts never passes its total.
    """
    prompts, total = num_prompts(requests), len(requests)
    if update is None or prompts == total:
        return update
    done = [0, 0]  # requests run, prompts reported

    def on_batch(n: int) -> None:
        done[0] += n
        reached = min(done[0], total) * prompts // total
        if reached > done[1]:
            update(reached - done[1])
            done[1] = reached

    return on_batch
