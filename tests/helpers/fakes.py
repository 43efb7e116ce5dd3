"""Fakes shared by the engine tests."""

from __future__ import annotations

import threading
import time

import torch
from vllm_pool.engine.core import EngineCore
from vllm_pool.engine.scheduler import Scheduler
from vllm_pool.engine.types import Request

from vllm_pool import PoolingParams


class OOMAbove(torch.nn.Module):
    """Delegates to ``model`` but raises a simulated device OOM above ``limit``.

    ``per="prompts"`` counts the rows of a padded batch, ``per="tokens"`` the length of a
    packed row. ``calls`` records the size of every call.
    """

    def __init__(self, model: torch.nn.Module, limit: int, per: str = "prompts") -> None:
        super().__init__()
        self.inner, self.limit, self.calls = model, limit, []
        self.dim = 0 if per == "prompts" else 1

    def forward(self, input_ids, **kwargs):
        self.calls.append(input_ids.shape[self.dim])
        if input_ids.shape[self.dim] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(input_ids=input_ids, **kwargs)


class FakeExecutor:
    """Records every batch; returns ``(task, first token id)`` per prompt; can be held or made to fail."""

    def __init__(self) -> None:
        self.batches: list[tuple[tuple[str, ...], list[int]]] = []
        self.events: list[tuple[str, int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = 0
        self.bad: set[int] = set()
        self.delay = 0.0

    def stage(self, batch):
        self.events.append(("stage", batch.requests[0].prompt_token_ids[0]))
        return batch

    def execute(self, staged, scheduled):
        self.started += 1
        self.gate.wait(10)
        time.sleep(self.delay)
        ids = [r.prompt_token_ids[0] for r in staged.requests]
        self.batches.append((scheduled.key, ids))
        self.events.append(("execute", ids[0]))
        if self.bad & set(ids):
            raise RuntimeError(f"bad input {sorted(self.bad & set(ids))}")
        return {task: [(task, i) for i in ids] for task in scheduled.key}

    def to_host(self, outputs):
        first = next(iter(outputs.values()))[0][1]
        self.events.append(("to_host", first))
        return lambda: outputs


def reqs(ids: list[int], length: int = 4) -> list[Request]:
    return [
        Request(index=i, prompt_token_ids=[t] * length, params=PoolingParams()) for i, t in enumerate(ids)
    ]


def make_core(
    budget: int = 1000, seqs: int = 64, output_thread: bool = False
) -> tuple[EngineCore, FakeExecutor]:
    fake = FakeExecutor()
    return EngineCore(fake, Scheduler(budget, seqs), output_thread=output_thread), fake
