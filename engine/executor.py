"""The device side of the engine core's loop: a model runner and its task poolers.

:class:`ModelExecutor` is the :class:`~vllm_pool.engine.core.Executor` the ``LLM`` gives its
:class:`~vllm_pool.engine.core.EngineCore`: it stages a batch's inputs, runs the forward
pass and every task's pooler on the same hidden states, and starts the copy of the pooled
outputs to the host (one gathered transfer per task on CUDA).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from vllm_pool.engine.model_thread import ModelThread, on_thread
from vllm_pool.engine.scheduler import ScheduledBatch
from vllm_pool.engine.types import Batch


class ModelExecutor:
    """:class:`Executor` over a :class:`~vllm_pool.engine.runner.ModelRunner` and task poolers.

    Args:
        runner: stages and runs batches (out-of-memory batches are split and retried there).
        poolers: the model's :class:`~vllm_pool.engine.pooler.TaskPoolers`.
        thread: the CPU's :class:`~vllm_pool.engine.model_thread.ModelThread`, through which
            staging and forward passes run (the main thread's inline, other threads' on it);
            None: in the calling thread.
    """

    def __init__(self, runner: Any, poolers: Any, thread: ModelThread | None = None) -> None:
        self.runner = runner
        self.poolers = poolers
        self.device = runner.device
        self.thread = thread

    def stage(self, batch: Batch) -> Any:
        return on_thread(self.thread, self.runner.stage, batch)

    def execute(self, staged: Any, batch: ScheduledBatch) -> dict[str, list[Any]]:
        return on_thread(self.thread, self._execute, staged, batch)

    @torch.inference_mode()
    def _execute(self, staged: Any, batch: ScheduledBatch) -> dict[str, list[Any]]:
        poolers = {task: self.poolers.get(task) for task in batch.key}
        params = {task: batch.params(task) for task in batch.key}
        outputs: dict[str, list[Any]] = {task: [] for task in batch.key}
        done = 0
        for sub, hidden in self.runner.forward_split(staged):  # sub-batches: contiguous, in order
            n = len(sub.requests)
            for task, pooler in poolers.items():
                p = params[task]
                outputs[task] += pooler(hidden, sub.requests, p[done : done + n] if p is not None else None)
            done += n
        return outputs

    def to_host(self, outputs: dict[str, list[Any]]) -> Callable[[], dict[str, list[Any]]]:
        """Start the outputs' copy to the host; the returned callable waits for it.

        On CUDA each task's outputs are gathered into one flat tensor on the device and
        copied with one non-blocking copy into pinned memory; the output thread then waits on
        one event, moves the data to ordinary memory (the pinned block goes back to the
        allocator's cache) and splits it. Elsewhere the outputs are already on the host.
        """
        if self.device.type != "cuda":
            return lambda: outputs
        flat = gather_to_host(outputs, pinned=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))  # the engine's device, not device 0

        def wait() -> dict[str, list[Any]]:
            event.synchronize()
            return {task: split_flat(host.clone(), shapes) for task, (host, shapes) in flat.items()}

        return wait


def gather_to_host(
    outputs: dict[str, list[torch.Tensor]], pinned: bool
) -> dict[str, tuple[torch.Tensor, list[torch.Size]]]:
    """Each task's outputs flattened into one fp32 tensor and copied to the host in one transfer.

    Returns ``{task: (flat host tensor, shapes)}``; with ``pinned`` the copy is non-blocking
    into pinned memory (wait for the device before reading it).
    """
    flat: dict[str, tuple[torch.Tensor, list[torch.Size]]] = {}
    for task, outs in outputs.items():
        shapes = [o.shape for o in outs]
        dev = torch.cat([o.reshape(-1).float() for o in outs]) if outs else torch.empty(0)
        host = torch.empty(dev.shape, dtype=torch.float32, pin_memory=pinned)
        host.copy_(dev, non_blocking=pinned)
        flat[task] = (host, shapes)
    return flat


def split_flat(flat: torch.Tensor, shapes: list[torch.Size]) -> list[torch.Tensor]:
    """Views of ``flat`` with the given shapes, in order (the inverse of a flattening cat)."""
    sizes = [s.numel() for s in shapes]
    return [part.view(shape) for part, shape in zip(flat.split(sizes), shapes)]
