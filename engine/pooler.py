"""Task poolers: a pooling method plus a head, one per supported task.

``TaskPoolers`` is the task-to-pooler map built once per model and checked at
construction; ``supported_tasks`` is what the model can do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from vllm_pool.engine.config import ModelConfig
from vllm_pool.engine.methods import SEQUENCE_METHODS, all_pool, step_pool
from vllm_pool.engine.params import PoolingParams
from vllm_pool.engine.types import (
    ALL_POOLING_TASKS,
    HiddenStates,
    PoolingType,
    Request,
    UnsupportedTaskError,
)


class Head(Protocol):
    def resolve(self, params: PoolingParams) -> PoolingParams: ...

    def __call__(self, x: torch.Tensor, params: PoolingParams) -> torch.Tensor: ...


@dataclass
class Pooler:
    """Pools one task: ``method`` chooses tokens, ``head`` turns them into the output.

    Sequence methods (CLS / MEAN / LAST) give one ``[out]`` vector per request; token
    methods (ALL / STEP) give ``[tokens, out]`` per request.
    """

    method: PoolingType
    head: Head

    def resolve(self, params: PoolingParams) -> PoolingParams:
        return self.head.resolve(params)

    def __call__(self, hidden: HiddenStates, requests: list[Request]) -> list[torch.Tensor]:
        params = [r.params for r in requests]
        if self.method in SEQUENCE_METHODS:
            pooled = SEQUENCE_METHODS[self.method](hidden)  # [batch, hidden]
            if all(p == params[0] for p in params):
                return list(self.head(pooled, params[0]).float().cpu().unbind(0))
            return [self.head(row.unsqueeze(0), p)[0].float().cpu() for row, p in zip(pooled, params)]
        if self.method is PoolingType.STEP:
            per_request = step_pool(hidden, [p.step_tag_id for p in params])
        else:
            per_request = all_pool(hidden)
        return [self.head(rows, p).float().cpu() for rows, p in zip(per_request, params)]


class TaskPoolers:
    """The poolers of one model, by task."""

    def __init__(self, model_name: str, poolers: dict[str, Pooler]) -> None:
        unknown = set(poolers) - set(ALL_POOLING_TASKS)
        if unknown:
            raise ValueError(f"Unknown pooling tasks {sorted(unknown)}")
        self.model_name = model_name
        self._poolers = poolers
        self.plugins: dict[str, Callable[..., object]] = {}

    @property
    def supported_tasks(self) -> tuple[str, ...]:
        return tuple(t for t in ALL_POOLING_TASKS if t in self._poolers)

    def get(self, task: object) -> Pooler:
        if task not in self._poolers:
            supported = list(self.supported_tasks)
            if task not in ALL_POOLING_TASKS:
                raise ValueError(
                    f"Unknown pooling_task {task!r}; the pooling tasks are {list(ALL_POOLING_TASKS)} "
                    f"and model {self.model_name!r} supports {supported}"
                )
            raise UnsupportedTaskError(
                f"Model {self.model_name!r} does not support the {task!r} task; supported tasks: {supported}"
            )
        return self._poolers[task]


def build_poolers(cfg: ModelConfig) -> TaskPoolers:
    """The task-to-pooler map of a model, from its resolved configuration."""
    from vllm_pool.engine.heads import EmbeddingHead, Projection

    poolers: dict[str, Pooler] = {}
    if cfg.convert in ("embed", "none"):
        dense = cfg.st.dense if cfg.st is not None else []
        projection = Projection(dense).to(cfg.device, cfg.dtype) if dense else None
        head = EmbeddingHead(
            model_name=cfg.name,
            hidden_size=cfg.hidden_size,
            projection=projection,
            normalize_default=cfg.default_normalize(),
            dimensions_default=cfg.pooler.dimensions,
            is_matryoshka=cfg.is_matryoshka,
            matryoshka_dimensions=cfg.matryoshka_dimensions,
        )
        method = PoolingType(cfg.default_pooling_type())
        if method in SEQUENCE_METHODS:
            poolers["embed"] = Pooler(method, head)
        poolers["token_embed"] = Pooler(
            PoolingType.STEP if method is PoolingType.STEP else PoolingType.ALL, head
        )
    return TaskPoolers(cfg.name, poolers)
