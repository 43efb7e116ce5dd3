"""The server's state: its options (:class:`ServerConfig`) and what every endpoint shares
(:class:`ServerState`: the engine's async client, the input checks, tokenization on the
tokenizer thread or the event loop, jobs run in the engine core).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request as HTTPRequest
from vllm_pool.engine.lengths import EMBEDDING, online_message
from vllm_pool.engine.llm import LLM
from vllm_pool.engine.model_thread import engine_call
from vllm_pool.engine.params import PoolingParams
from vllm_pool.engine.scoring import pair_up
from vllm_pool.engine.server import limits
from vllm_pool.engine.server.engine_client import EngineClient
from vllm_pool.engine.server.errors import APIError, ClientDisconnected
from vllm_pool.engine.server.metrics import ServerMetrics
from vllm_pool.engine.task_io import Prepared, PromptIO
from vllm_pool.engine.types import Request

logger = logging.getLogger(__name__)
T = TypeVar("T")
DISCONNECT_WATCH_AFTER = 0.25
"""Seconds a request waits before the server listens for its client's disconnect (most are
answered sooner, and a listening task per request costs the event loop several percent)."""


@dataclass
class ServerConfig:
    """Serving options (the engine's own options are those of :class:`LLM`).

    Args:
        served_model_names: names clients may send as ``model`` (default: the model's name);
            the first is the one answered.
        api_key: when set, every endpoint but ``/health`` (the docs pages included) needs
            ``Authorization: Bearer <key>``, checked before the body is read.
        max_inputs: inputs (prompts, pairs or documents) per request; more is a 413.
        max_request_tokens: prompt tokens per request after tokenization; more is a 413.
        max_body_bytes: request body size; more is a 413 (before the body is parsed).
        max_input_chars: characters of one text input; more is a 413 (before tokenization).
        body_timeout: seconds a request body may take to arrive; then a 408.
        header_timeout: seconds a connection may take to send a complete request head
            (enforced by the uvicorn protocol of :mod:`.connections`).
        batch_wait: after a batch that answered several clients, seconds the engine core may
            wait (at most half that batch's time) for their next requests, so that they run
            as one batch instead of one by one as they arrive (``EngineCore._gather``); 0:
            never.
        answer_half_closed: answer a client that half-closes its connection
            (``shutdown(SHUT_WR)``) after sending a request; a client that closes its socket
            is then seen as gone only when its answer is written, so its queued inputs still
            run. Off (default): an end of file from the client is a disconnect, as in uvicorn
            and vLLM, and its queued inputs are dropped (:mod:`.connections`).
    """

    served_model_names: list[str] | None = None
    api_key: str | None = None
    max_inputs: int = 2048
    max_request_tokens: int = 524_288
    max_body_bytes: int = limits.DEFAULT_MAX_BODY_BYTES
    max_input_chars: int = limits.DEFAULT_MAX_INPUT_CHARS
    body_timeout: float = limits.DEFAULT_BODY_TIMEOUT
    header_timeout: float = limits.DEFAULT_HEADER_TIMEOUT
    batch_wait: float = 0.1
    answer_half_closed: bool = False


class ServerState:
    """The engine, its async client, and the checks shared by all endpoints (HTTP only).

    Input checks, pairing and output shaping are the engine's task IO processors
    (``engine.task_io``), the same ones ``LLM.embed`` / ``score`` / ... use; jobs go to the
    LLM's engine core, whose one scheduler batches them with every other client's.
    """

    def __init__(self, llm: LLM, config: ServerConfig) -> None:
        self.llm = llm
        self.config = config
        self.names = list(dict.fromkeys([*(config.served_model_names or []), llm.model_name]))
        self.model_name = self.names[0]
        self.metrics = ServerMetrics()
        self.engine = EngineClient(llm.core, metrics=self.metrics)
        llm.core.max_gather_s = config.batch_wait  # the server's driver only (offline calls never wait)
        self.metrics.gauge(
            "vllm_pool_queue_inputs", "Inputs waiting in the queue.", lambda: self.engine.queue_size
        )
        hf_config = llm.model_config.hf_config
        self.id2label: dict[Any, str] = dict(getattr(hf_config, "id2label", None) or {})

    # ------------------------------------------------------------------ checks
    def check_model(self, name: str | None) -> str:
        """The ``model`` a response names: the request's (one of the served names, else a 404),
        or when unset or ``""`` the first served name (vLLM's rule)."""
        if name and name not in self.names:
            raise APIError(f"The model `{name}` does not exist.", 404, "model")
        return name or self.model_name

    def check_inputs(self, n: int, param: str = "input") -> None:
        if n == 0:
            raise APIError(f"{param} must not be empty", 400, param)
        if n > self.config.max_inputs:
            raise APIError(
                f"Too many inputs: {n} in one request, the limit is {self.config.max_inputs} (--max-inputs)",
                413,
                param,
            )

    def check_tokens(self, prepared: Prepared) -> int:
        n = prepared.num_tokens
        if n > self.config.max_request_tokens:
            raise APIError(
                f"Too many tokens: {n} in one request, the limit is {self.config.max_request_tokens} "
                "(--max-request-tokens)",
                413,
            )
        return n

    def check_texts(self, texts: Any, param: str) -> None:
        """Strings of a request field: valid Unicode, within ``max_input_chars`` (``""`` is
        its special tokens; the engine refuses a prompt only when it has no tokens)."""
        limits.check_texts(texts, param, self.config.max_input_chars)

    # ------------------------------------------------------------------ work off the event loop
    async def in_tokenizer_thread(
        self, fn: Callable[[], T], offset: int = 0, inline: bool = False, operation: str = EMBEDDING
    ) -> T:
        """Run ``fn`` on the engine's tokenizer thread (``inline``: here, on the event loop);
        the engine's input errors become 400s.

        ``offset``: where the slice ``fn`` works on starts in the caller's list (the message
        then names the caller's index). ``operation``: what an over-long input was for, in
        vLLM's message (it names it by endpoint: ``"score"``, ``"classification"``, else
        ``"embedding generation"``).
        """
        try:
            if inline:
                return fn()
            return await asyncio.get_running_loop().run_in_executor(self.llm.tokenizer_pool, fn)
        except (ValueError, TypeError) as exc:  # the engine's checks: a bad request
            message = online_message(exc, operation)  # vLLM's server texts for over-long prompts
            if offset:  # a slice of a large request: name the caller's index
                shift = lambda m: f"prompts[{int(m.group(1)) + offset}]"  # noqa: E731
                message = re.sub(r"prompts\[(\d+)\]", shift, message)
            raise APIError(message, 400) from exc

    async def prepare(self, fn: Callable[[], Prepared], operation: str = EMBEDDING) -> tuple[Prepared, int]:
        """Check and tokenize with a task IO processor; returns the job and its token count."""
        prepared = await self.in_tokenizer_thread(fn, operation=operation)
        return prepared, self.check_tokens(prepared)

    async def prepare_prompts(
        self,
        io: PromptIO,
        prompts: list[Any],
        params: PoolingParams | None,
        truncate: int | None,
        operation: str = EMBEDDING,
        add_special_tokens: bool = True,
    ) -> tuple[Prepared, int]:
        """Check and tokenize ``prompts`` for ``io``'s task; returns the job and its token count.

        A large request is tokenized slice by slice (:func:`.limits.slices`) on the engine's
        tokenizer thread; a small one (:func:`.limits.is_small`) on the event loop, when the
        tokenizer's Rust backend serves each thread its own copy (``FastEncoder``), so it
        never waits behind a large one. ``add_special_tokens=False``: texts are tokenized
        without the special tokens (:meth:`without_special_tokens`), on the tokenizer thread.
        """
        requests: list[Request] = []
        ip = self.llm.input_processor
        inline = add_special_tokens and ip.encoder.available and limits.is_small(prompts)
        for part in limits.slices(prompts):
            chunk = prompts[part.start : part.stop]

            def make(chunk: list[Any] = chunk) -> list[Request]:
                items = chunk if add_special_tokens else self.without_special_tokens(chunk)
                return self.llm.make_requests(items, io.task, params, truncate)

            done = await self.in_tokenizer_thread(make, part.start, inline, operation)
            for r in done:
                r.index += part.start
            requests += done
        prepared = io.prepared(requests)
        return prepared, self.check_tokens(prepared)

    def without_special_tokens(self, prompts: list[Any]) -> list[Any]:
        """``prompts`` with each text replaced by its token ids without special tokens (a
        request's ``add_special_tokens: false``, as vLLM tokenizes it); token-id prompts stay.

        Runs on the tokenizer thread, under the input processor's lock as ``/tokenize`` (a
        Hugging Face tokenizer changes its settings per call); texts are lowercased first
        where the model says so, as the engine's own tokenization does.
        """
        ip = self.llm.input_processor
        texts = [(i, p) for i, p in enumerate(prompts) if isinstance(p, str)]
        if not texts:
            return prompts
        batch = [t.lower() if ip.do_lower_case else t for _, t in texts]
        with ip.lock:
            encoded = ip.tokenizer(batch, add_special_tokens=False)["input_ids"]
        items = list(prompts)
        for (i, _), ids in zip(texts, encoded):
            if not ids:
                raise ValueError(f"prompts[{i}] is empty: it has no tokens without special tokens")
            items[i] = {"prompt_token_ids": list(ids)}
        return items

    async def run(self, prepared: Prepared, http: HTTPRequest) -> list[Any]:
        """Queue the job in the engine core, await it, shape its outputs.

        A job of more than two batches' worth of tokens joins the core's queue slice by slice
        (two slices queued at a time, :func:`.limits.submit_in_slices`), so a small request
        that arrives meanwhile waits for at most about two slices instead of the whole job.
        """
        tasks = list(prepared.tasks)
        sliceable = all(v is None for v in prepared.tasks.values())  # per-request params: one job
        budget = 2 * self.llm.max_num_batched_tokens if sliceable else max(prepared.num_tokens, 1)

        gone = self.engine.watch_disconnect(http.receive, DISCONNECT_WATCH_AFTER)

        async def submit(chunk: list[Request]) -> list[tuple[Any, ...]]:
            res = await self.engine.submit(chunk, prepared.tasks, gone.future)
            return list(zip(*(res[t] for t in tasks)))  # one row per request: its output per task

        try:
            rows = await limits.submit_in_slices(submit, prepared.requests, budget)
        except ClientDisconnected as exc:
            logger.info("Client disconnected from %s; dropped its pending inputs", http.url.path)
            raise APIError("Client disconnected", 499) from exc
        finally:
            gone.cancel()
        outputs = {t: [row[k] for row in rows] for k, t in enumerate(tasks)}
        # on the event loop, as one engine call: a team its torch work starts (the cosines of a
        # large /score) is released, not left beside the model thread's (engine.model_thread)
        return engine_call(self.llm.model_thread, prepared.finish, outputs)

    async def scores(
        self,
        first: Any,
        second: Any,
        truncate: int | None,
        use_activation: bool | None,
        http: HTTPRequest,
        names: tuple[str, str] = ("text_1", "text_2"),
        operation: str = EMBEDDING,
    ) -> tuple[list[float], int, int]:
        """Scores of 1:1, 1:N or N:N pairs (the engine's score processor: a cross-encoder's
        ``score`` task, else the cosine of embeddings). A cross-encoder's pairs are tokenized
        in slices, as in :meth:`prepare_prompts`.

        Returns the scores, the usage's prompt tokens (vLLM's: each pair's tokens, so a text
        embedded once for several pairs counts in each) and the prompt tokens the model ran.
        """
        io = self.llm.task_io["score"]
        if io.cross_encoder:
            params = PoolingParams(use_activation=use_activation)
            texts_1, texts_2 = await self.in_tokenizer_thread(
                lambda: pair_up(first, second, names), operation=operation
            )
            requests: list[Request] = []
            for part in limits.slices(texts_2):
                a, b = texts_1[part.start : part.stop], texts_2[part.start : part.stop]
                done = await self.in_tokenizer_thread(
                    lambda a=a, b=b: self.llm.make_pair_requests(a, b, params, truncate), operation=operation
                )
                for r in done:
                    r.index += part.start
                requests += done
            prepared = io.cross_prepared(requests)
            n_tokens = self.check_tokens(prepared)
        else:
            bi_params = PoolingParams(use_activation=use_activation) if use_activation is not None else None
            prepared, n_tokens = await self.prepare(
                lambda: io.prepare(first, second, bi_params, truncate, names), operation
            )
        outs = await self.run(prepared, http)
        usage = sum(len(o.prompt_token_ids) for o in outs)
        return [o.outputs.score for o in outs], usage, n_tokens

    def label(self, i: int) -> str:
        return str(self.id2label.get(i, self.id2label.get(str(i), f"LABEL_{i}")))


# ---------------------------------------------------------------------- helpers
def to_prompts(value: str | list[Any]) -> list[Any]:
    """Normalize an ``input`` field to engine prompts (strings or token-id dicts)."""
    if isinstance(value, str):
        return [value]
    if value and isinstance(value[0], int):
        return [{"prompt_token_ids": value}]
    return [{"prompt_token_ids": v} if isinstance(v, list) else v for v in value]


# ---------------------------------------------------------------------- the app
