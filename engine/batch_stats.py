"""What the engine core reports of each batch it delivers: the server's metrics hook and the
jobs' progress callbacks, run so that a callback that raises fails its own job only."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vllm_pool.engine.core import EngineCore
    from vllm_pool.engine.scheduler import Job, ScheduledBatch

logger = logging.getLogger(__name__)


@dataclass
class BatchStats:
    """What the core reports of each batch it ran (server metrics)."""

    key: tuple[str, ...]
    num_prompts: int
    num_jobs: int
    padded_tokens: int
    seconds: float
    queue_seconds: list[float]


def batch_callbacks(
    core: EngineCore, scheduled: ScheduledBatch, by_job: dict[Job, list[int]], start: float, now: float
) -> BaseException | None:
    """Run ``core.on_batch`` and each job's ``on_batch`` (its progress) for one batch.

    A job whose callback raises is failed with that error; the others, and the caller
    driving the loop, are not affected (a failing metrics hook is logged). An interrupt
    (``KeyboardInterrupt``) raised in a callback is returned, for the core to raise once
    every job has its outputs.
    """
    interrupt: BaseException | None = None
    if core.on_batch is not None:
        queue_seconds = [start - job.enqueued for job in by_job if job.first_run is None]
        lengths = [job.requests[pos].num_tokens for job, pos in scheduled.entries]
        padded = sum(lengths) if core.scheduler.packed else max(lengths) * len(lengths)
        stats = BatchStats(scheduled.key, len(lengths), len(by_job), padded, now - start, queue_seconds)
        try:
            core.on_batch(stats)
        except Exception:
            logger.exception("The engine's batch callback failed")
        except BaseException as exc:
            interrupt = exc
    for job, rows in by_job.items():
        if job.first_run is None:
            job.first_run = start
        if job.on_batch is not None and not job.done:
            try:
                job.on_batch(len(rows))
            except Exception as exc:  # its progress bar: that job fails, not the batch
                core.fail(job, exc)
            except BaseException as exc:
                interrupt = exc
    return interrupt
