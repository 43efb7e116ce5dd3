"""Contracts of the engine, in one place: tasks, pooling types, requests, batches, errors.

Read this file first. Every other engine module speaks in these types:

``inputs`` turns prompts into :class:`Request` objects, ``scheduler`` groups them into
:class:`Batch` objects under a token budget, the ``runner`` turns a batch into flat hidden
states (:class:`HiddenStates`), and a ``pooler`` turns those into one output per request.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import torch
    from vllm_pool.engine.params import PoolingParams

PoolingTask = Literal["embed", "classify", "score", "token_embed", "token_classify", "plugin"]
ALL_POOLING_TASKS: tuple[str, ...] = get_args(PoolingTask)


class PoolingType(str, enum.Enum):
    """Which hidden states a pooler reads."""

    CLS = "CLS"
    MEAN = "MEAN"
    LAST = "LAST"
    ALL = "ALL"
    STEP = "STEP"


@dataclass
class Request:
    """One tokenized prompt on its way through the engine.

    Attributes:
        index: position of the prompt in the caller's list (outputs come back in this order).
        prompt_token_ids: token ids fed to the model, special tokens included.
        params: the resolved pooling parameters of this request.
        token_type_ids: segment ids for text pairs (cross-encoders), else ``None``.
        prompt: the original text, when there was one.
        instruction_len: how many leading tokens are the prompt's instruction (a Sentence
            Transformers prompt such as ``"query: "``); poolers of models whose ST Pooling
            says ``include_prompt: false`` leave them out.
        attention_mask: which positions the model attends to (1) or not (0), for token-id
            prompts that carry one; every position still gets a hidden state (ColBERT's
            query expansion tokens). ``None``: all positions are attended.
    """

    index: int
    prompt_token_ids: list[int]
    params: PoolingParams
    token_type_ids: list[int] | None = None
    prompt: str | None = None
    instruction_len: int = 0
    attention_mask: list[int] | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids)


@dataclass
class Batch:
    """Requests run together in one forward pass.

    ``padded_tokens`` is what the batch costs on a padded model (``max_len x n``); the
    scheduler keeps it under the token budget, ``budget`` (``None``: none given), which a
    filled packed row (``packing.fillers``) does not pass either.
    """

    requests: list[Request] = field(default_factory=list)
    budget: int | None = None

    @property
    def max_len(self) -> int:
        return max((r.num_tokens for r in self.requests), default=0)

    @property
    def num_tokens(self) -> int:
        return sum(r.num_tokens for r in self.requests)

    @property
    def padded_tokens(self) -> int:
        return self.max_len * len(self.requests)


@dataclass
class HiddenStates:
    """Flat (unpadded) last hidden states of a batch, TEI-style.

    Attributes:
        data: ``[total_tokens, hidden]`` hidden states of all requests, concatenated.
        cu_seqlens: ``[batch + 1]`` cumulative sequence lengths; request ``i`` owns rows
            ``cu_seqlens[i]:cu_seqlens[i + 1]``.
        token_ids: ``[total_tokens]`` the input ids, aligned with ``data``.
        lengths: each request's token count on the host (the runner knows them), so that
            splitting per request never waits for the device to read ``cu_seqlens``.
    """

    data: torch.Tensor
    cu_seqlens: torch.Tensor
    token_ids: torch.Tensor
    lengths: list[int] | None = None

    @property
    def seq_lens(self) -> torch.Tensor:
        return self.cu_seqlens[1:] - self.cu_seqlens[:-1]

    @property
    def host_lengths(self) -> list[int]:
        """Each request's token count as Python ints (a device read only when not given)."""
        return self.lengths if self.lengths is not None else self.seq_lens.tolist()

    def split(self) -> list[torch.Tensor]:
        """Per-request views ``[len_i, hidden]`` (no copy)."""
        return list(self.data.split(self.host_lengths))


class ModelNotFoundError(FileNotFoundError):
    """The model folder or hub id could not be found or loaded."""


class UnsupportedTaskError(ValueError):
    """A pooling task that the loaded model does not support."""
