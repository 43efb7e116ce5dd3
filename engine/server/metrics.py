"""Prometheus metrics in the text exposition format, with no extra dependency.

Requests and their latency by endpoint and status, prompt tokens, the queue, and the size,
padded tokens and run time of every batch the model runs.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TOKEN_BUCKETS = (16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)

Labels = tuple[tuple[str, str], ...]


def _fmt_labels(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    items = list(labels) + ([extra] if extra else [])
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in items) + "}"


def _fmt(value: float) -> str:
    return repr(float(value)) if value != int(value) else f"{int(value)}"


class Counter:
    """A monotonically increasing value per label set."""

    kind = "counter"

    def __init__(self, name: str, doc: str) -> None:
        self.name, self.doc = name, doc
        self.values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + amount

    def samples(self) -> list[str]:
        return [f"{self.name}{_fmt_labels(k)} {_fmt(v)}" for k, v in sorted(self.values.items())]


class Gauge(Counter):
    """A value that goes up and down, read from a callback when scraped."""

    kind = "gauge"

    def __init__(self, name: str, doc: str, read: Callable[[], float]) -> None:
        super().__init__(name, doc)
        self.read = read

    def samples(self) -> list[str]:
        return [f"{self.name} {_fmt(self.read())}"]


class Histogram:
    """Cumulative bucket counts, sum and count per label set."""

    kind = "histogram"

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...]) -> None:
        self.name, self.doc, self.buckets = name, doc, buckets
        self.values: dict[Labels, list[float]] = {}  # counts per bucket (+Inf last), then sum

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        row = self.values.setdefault(key, [0.0] * (len(self.buckets) + 2))
        row[bisect.bisect_left(self.buckets, value)] += 1
        row[-1] += value

    def samples(self) -> list[str]:
        out = []
        for key, row in sorted(self.values.items()):
            total = 0.0
            for bound, n in zip((*self.buckets, float("inf")), row[:-1]):
                total += n
                le = "+Inf" if bound == float("inf") else _fmt(bound)
                out.append(f"{self.name}_bucket{_fmt_labels(key, ('le', le))} {_fmt(total)}")
            out.append(f"{self.name}_sum{_fmt_labels(key)} {_fmt(row[-1])}")
            out.append(f"{self.name}_count{_fmt_labels(key)} {_fmt(total)}")
        return out


class ServerMetrics:
    """The server's metrics; ``render()`` is the body of ``GET /metrics``."""

    def __init__(self, prefix: str = "vllm_pool") -> None:
        p = prefix
        self.requests = Counter(f"{p}_requests_total", "HTTP requests by endpoint and status code.")
        self.latency = Histogram(
            f"{p}_request_latency_seconds", "End-to-end request latency by endpoint.", _LATENCY_BUCKETS
        )
        self.prompt_tokens = Counter(f"{p}_prompt_tokens_total", "Prompt tokens processed, by endpoint.")
        self.inputs = Counter(f"{p}_inputs_total", "Inputs (prompts or pairs) processed, by endpoint.")
        self.dropped = Counter(f"{p}_dropped_inputs_total", "Queued inputs dropped: client disconnected.")
        self.batch_size = Histogram(f"{p}_batch_size", "Inputs per model batch.", _SIZE_BUCKETS)
        self.batch_tokens = Histogram(
            f"{p}_batch_padded_tokens", "Padded tokens (max_len x n) per model batch.", _TOKEN_BUCKETS
        )
        self.batch_requests = Histogram(
            f"{p}_batch_requests", "Client requests sharing one model batch.", _SIZE_BUCKETS
        )
        self.batch_seconds = Histogram(f"{p}_batch_seconds", "Model time per batch.", _LATENCY_BUCKETS)
        self.queue_seconds = Histogram(
            f"{p}_queue_seconds", "Time a request waits before its first batch runs.", _LATENCY_BUCKETS
        )
        self._gauges: list[Gauge] = []

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """Add a gauge read from ``read()`` at scrape time."""
        self._gauges.append(Gauge(name, doc, read))

    def render(self) -> str:
        metrics: list[Any] = [
            self.requests, self.latency, self.prompt_tokens, self.inputs, self.dropped,
            self.batch_size, self.batch_tokens, self.batch_requests, self.batch_seconds,
            self.queue_seconds, *self._gauges,
        ]  # fmt: skip
        lines = []
        for m in metrics:
            lines += [f"# HELP {m.name} {m.doc}", f"# TYPE {m.name} {m.kind}", *m.samples()]
        return "\n".join(lines) + "\n"


Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class MetricsMiddleware:
    """Pure ASGI middleware that counts and times every HTTP request.

    Args:
        app: the wrapped ASGI app.
        metrics: where to record.
        paths: endpoint paths to label by name; others are labelled ``other``.
    """

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, paths: set[str]) -> None:
        self.app, self.metrics, self.paths = app, metrics, paths

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope["path"] if scope["path"] in self.paths else "other"
            self.metrics.requests.inc(endpoint=path, code=str(status))
            self.metrics.latency.observe(time.perf_counter() - start, endpoint=path)
