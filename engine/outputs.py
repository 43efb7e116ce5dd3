"""Output objects of the pooling APIs, with vLLM's field names and types.

The engine hands back tensors; Python lists are made only when a field is read
(``.embedding``, ``.probs``, ``.score``), once, and cached. Reading ``.data`` gives the
tensor without any conversion, and :func:`stack_outputs` / :func:`output_lists` convert a
whole batch in one call (what the integrations use).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch


@dataclass(eq=False)
class PoolingOutput:
    """Raw pooled data of one request (a tensor: ``[hidden]``, ``[tokens, hidden]``, ...)."""

    data: torch.Tensor

    def __eq__(self, other: object) -> bool:
        """Equal data, as vLLM's ``PoolingOutput`` (a tensor's ``==`` is element-wise)."""
        if not isinstance(other, PoolingOutput):
            return NotImplemented
        return self.data.shape == other.data.shape and bool((self.data == other.data).all())


class _LazyVector:
    """A 1-D result kept as a tensor; its Python list is built on first read."""

    _field = "values"

    def __init__(self, values: list[float] | torch.Tensor) -> None:
        if isinstance(values, torch.Tensor):
            self._tensor: torch.Tensor | None = values
            self._list: list[float] | None = None
        else:
            self._tensor, self._list = None, list(values)

    @property
    def data(self) -> torch.Tensor:
        """The values as a tensor (no conversion when the engine made this output)."""
        if self._tensor is None:
            self._tensor = torch.tensor(self._list, dtype=torch.float32)
        return self._tensor

    def _values(self) -> list[float]:
        if self._list is None:
            assert self._tensor is not None
            self._list = self._tensor.tolist()
        return self._list

    def __len__(self) -> int:
        return len(self._list) if self._list is not None else int(self.data.numel())

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._field}={self._values()!r})"

    @staticmethod
    def _check(out: PoolingOutput, what: str) -> torch.Tensor:
        if out.data.ndim != 1:
            raise ValueError(f"pooled data should be a 1-D tensor for {what}")
        return out.data


class EmbeddingOutput(_LazyVector):
    """One embedding vector: ``.embedding`` is a ``list[float]`` (built when first read)."""

    _field = "embedding"

    def __init__(self, embedding: list[float] | torch.Tensor) -> None:
        super().__init__(embedding)

    @classmethod
    def from_base(cls, out: PoolingOutput) -> EmbeddingOutput:
        return cls(cls._check(out, "an embedding"))

    @property
    def embedding(self) -> list[float]:
        return self._values()

    @property
    def hidden_size(self) -> int:
        return len(self)


class ClassificationOutput(_LazyVector):
    """Class probabilities (or logits when the activation is off): ``.probs`` is a ``list[float]``."""

    _field = "probs"

    def __init__(self, probs: list[float] | torch.Tensor) -> None:
        super().__init__(probs)

    @classmethod
    def from_base(cls, out: PoolingOutput) -> ClassificationOutput:
        return cls(cls._check(out, "classification"))

    @property
    def probs(self) -> list[float]:
        return self._values()

    @property
    def num_classes(self) -> int:
        return len(self)


class ScoringOutput:
    """A similarity / relevance score: ``.score`` is a ``float``."""

    def __init__(self, score: float | torch.Tensor) -> None:
        self._score = score

    @classmethod
    def from_base(cls, out: PoolingOutput) -> ScoringOutput:
        if out.data.numel() != 1:
            raise ValueError("pooled data should hold one value for a score")
        return cls(out.data.reshape(-1)[0])

    @property
    def score(self) -> float:
        if not isinstance(self._score, float):
            self._score = float(self._score)
        return self._score

    @property
    def data(self) -> torch.Tensor:
        return torch.as_tensor(self._score, dtype=torch.float32).reshape(1)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ScoringOutput) and self.score == other.score

    def __repr__(self) -> str:
        return f"ScoringOutput(score={self.score!r})"


OutputT = TypeVar("OutputT")


@dataclass
class PoolingRequestOutput(Generic[OutputT]):
    """The result of one prompt (vLLM's ``PoolingRequestOutput``).

    Attributes:
        request_id: a string id, unique per engine.
        outputs: the task's output object (``.data``, ``.embedding``, ``.probs`` or ``.score``).
        prompt_token_ids: the token ids the model saw.
        num_cached_tokens: prompt tokens served from a prefix cache (always 0: this engine
            has no prefix cache).
        finished: always ``True`` (offline outputs are complete).
    """

    request_id: str
    outputs: OutputT
    prompt_token_ids: list[int]
    num_cached_tokens: int = 0
    finished: bool = True

    def _with(self, outputs: Any) -> Any:
        return dict(
            request_id=self.request_id,
            outputs=outputs,
            prompt_token_ids=self.prompt_token_ids,
            num_cached_tokens=self.num_cached_tokens,
            finished=self.finished,
        )


class EmbeddingRequestOutput(PoolingRequestOutput[EmbeddingOutput]):
    """A :class:`PoolingRequestOutput` of ``LLM.embed``: ``.outputs.embedding``."""

    @staticmethod
    def from_base(request_output: PoolingRequestOutput[Any]) -> EmbeddingRequestOutput:
        outputs = EmbeddingOutput.from_base(request_output.outputs)
        return EmbeddingRequestOutput(**request_output._with(outputs))


class ClassificationRequestOutput(PoolingRequestOutput[ClassificationOutput]):
    """A :class:`PoolingRequestOutput` of ``LLM.classify``: ``.outputs.probs``."""

    @staticmethod
    def from_base(request_output: PoolingRequestOutput[Any]) -> ClassificationRequestOutput:
        outputs = ClassificationOutput.from_base(request_output.outputs)
        return ClassificationRequestOutput(**request_output._with(outputs))


class ScoringRequestOutput(PoolingRequestOutput[ScoringOutput]):
    """A :class:`PoolingRequestOutput` of ``LLM.score``: ``.outputs.score``."""

    @staticmethod
    def from_base(request_output: PoolingRequestOutput[Any]) -> ScoringRequestOutput:
        outputs = ScoringOutput.from_base(request_output.outputs)
        return ScoringRequestOutput(**request_output._with(outputs))


REQUEST_OUTPUT_CLASSES: dict[type, type[PoolingRequestOutput[Any]]] = {
    EmbeddingOutput: EmbeddingRequestOutput,
    ClassificationOutput: ClassificationRequestOutput,
    ScoringOutput: ScoringRequestOutput,
}
"""The request output class that holds each output class (``PoolingOutput``: the base class)."""


def stack_outputs(outputs: Sequence[PoolingRequestOutput[Any]]) -> torch.Tensor:
    """The ``.outputs.data`` of same-shaped outputs as one ``[n, ...]`` fp32 tensor (no lists)."""
    if not outputs:
        return torch.empty(0)
    return torch.stack([o.outputs.data for o in outputs]).float()


def output_lists(outputs: Sequence[PoolingRequestOutput[Any]]) -> list[Any]:
    """Python values of a whole batch of outputs in one conversion (``.tolist()`` once).

    Embedding / classification outputs give ``list[list[float]]``, scores ``list[float]``.
    """
    if not outputs:
        return []
    data = stack_outputs(outputs)
    if isinstance(outputs[0].outputs, ScoringOutput):
        return data.reshape(-1).tolist()
    return data.tolist()
