"""Output objects of the pooling APIs, with vLLM's field names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import torch


@dataclass
class PoolingOutput:
    """Raw pooled data of one request (a tensor: ``[hidden]``, ``[tokens, hidden]``, ...)."""

    data: torch.Tensor


@dataclass
class EmbeddingOutput:
    """One embedding vector."""

    embedding: list[float]

    @classmethod
    def from_base(cls, out: PoolingOutput) -> EmbeddingOutput:
        if out.data.ndim != 1:
            raise ValueError("pooled data should be a 1-D tensor for an embedding")
        return cls(embedding=out.data.tolist())

    @property
    def hidden_size(self) -> int:
        return len(self.embedding)


@dataclass
class ClassificationOutput:
    """Class probabilities (or logits when the activation is off)."""

    probs: list[float]

    @classmethod
    def from_base(cls, out: PoolingOutput) -> ClassificationOutput:
        if out.data.ndim != 1:
            raise ValueError("pooled data should be a 1-D tensor for classification")
        return cls(probs=out.data.tolist())

    @property
    def num_classes(self) -> int:
        return len(self.probs)


@dataclass
class ScoringOutput:
    """A similarity / relevance score."""

    score: float

    @classmethod
    def from_base(cls, out: PoolingOutput) -> ScoringOutput:
        if out.data.numel() != 1:
            raise ValueError("pooled data should hold one value for a score")
        return cls(score=float(out.data.reshape(-1)[0]))


OutputT = TypeVar("OutputT")


@dataclass
class PoolingRequestOutput(Generic[OutputT]):
    """The result of one prompt.

    Attributes:
        request_id: a string id, unique per engine.
        outputs: the task's output object (``.data``, ``.embedding``, ``.probs`` or ``.score``).
        prompt_token_ids: the token ids the model saw.
        finished: always ``True`` (offline outputs are complete).
    """

    request_id: str
    outputs: OutputT
    prompt_token_ids: list[int]
    finished: bool = True


EmbeddingRequestOutput = PoolingRequestOutput[EmbeddingOutput]
ClassificationRequestOutput = PoolingRequestOutput[ClassificationOutput]
ScoringRequestOutput = PoolingRequestOutput[ScoringOutput]
