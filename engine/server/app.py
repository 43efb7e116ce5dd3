"""The FastAPI app: the spec's OpenAI-compatible endpoints over one :class:`LLM`.

``build_app(llm)`` returns an ASGI app that keeps only HTTP: parsing, limits, JSON. Input
checks, pairing and output shaping are the engine's task IO processors (``engine.task_io``),
shared with ``LLM``; every job goes to the LLM's engine core (``engine.core``), whose one
scheduler batches it with every other client's. Tokenization runs on the engine's tokenizer
thread and the model on the core's thread, so the event loop never waits on either.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from vllm_pool.engine.lengths import online_message
from vllm_pool.engine.llm import LLM
from vllm_pool.engine.params import PoolingParams
from vllm_pool.engine.scoring import pair_up
from vllm_pool.engine.server import limits
from vllm_pool.engine.server import protocol as p
from vllm_pool.engine.server.engine_client import EngineClient
from vllm_pool.engine.server.errors import APIError, ClientDisconnected, install_error_handlers
from vllm_pool.engine.server.metrics import MetricsMiddleware, ServerMetrics
from vllm_pool.engine.server.pooling_api import header_id, pooling_task, run_plugin
from vllm_pool.engine.server.responses import encode_batch, json_response
from vllm_pool.engine.task_io import Prepared, PromptIO, encode_processor
from vllm_pool.engine.types import Request

logger = logging.getLogger(__name__)
T = TypeVar("T")

ENDPOINTS = {
    "/v1/embeddings", "/pooling", "/classify", "/score", "/v1/score", "/rerank", "/v1/rerank",
    "/tokenize", "/detokenize", "/v1/models", "/health", "/metrics",
}  # fmt: skip


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
    def check_model(self, name: str | None) -> None:
        if name is not None and name not in self.names:
            raise APIError(f"The model `{name}` does not exist.", 404, "model")

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

    def check_texts(self, texts: Any, param: str, allow_empty: bool = False) -> None:
        """Strings of a request field: valid Unicode, within ``max_input_chars``, non-empty
        unless ``allow_empty`` (texts to embed or classify: ``""`` is its special tokens)."""
        limits.check_texts(texts, param, self.config.max_input_chars, allow_empty)

    # ------------------------------------------------------------------ work off the event loop
    async def in_tokenizer_thread(self, fn: Callable[[], T], offset: int = 0, inline: bool = False) -> T:
        """Run ``fn`` on the engine's tokenizer thread (``inline``: here, on the event loop);
        the engine's input errors become 400s.

        ``offset``: where the slice ``fn`` works on starts in the caller's list (the message
        then names the caller's index).
        """
        try:
            if inline:
                return fn()
            return await asyncio.get_running_loop().run_in_executor(self.llm.tokenizer_pool, fn)
        except (ValueError, TypeError) as exc:  # the engine's checks: a bad request
            message = online_message(exc)  # vLLM's server texts for over-long prompts
            if offset:  # a slice of a large request: name the caller's index
                shift = lambda m: f"prompts[{int(m.group(1)) + offset}]"  # noqa: E731
                message = re.sub(r"prompts\[(\d+)\]", shift, message)
            raise APIError(message, 400) from exc

    async def prepare(self, fn: Callable[[], Prepared]) -> tuple[Prepared, int]:
        """Check and tokenize with a task IO processor; returns the job and its token count."""
        prepared = await self.in_tokenizer_thread(fn)
        return prepared, self.check_tokens(prepared)

    async def prepare_prompts(
        self, io: PromptIO, prompts: list[Any], params: PoolingParams | None, truncate: int | None
    ) -> tuple[Prepared, int]:
        """Check and tokenize ``prompts`` for ``io``'s task; returns the job and its token count.

        A large request is tokenized slice by slice (:func:`.limits.slices`) on the engine's
        tokenizer thread; a small one (:func:`.limits.is_small`) on the event loop, when the
        tokenizer's Rust backend serves each thread its own copy (``FastEncoder``), so it
        never waits behind a large one.
        """
        requests: list[Request] = []
        inline = self.llm.input_processor.encoder.available and limits.is_small(prompts)
        for part in limits.slices(prompts):
            chunk = prompts[part.start : part.stop]
            done = await self.in_tokenizer_thread(
                lambda chunk=chunk: self.llm.make_requests(chunk, io.task, params, truncate),
                part.start,
                inline,
            )
            for r in done:
                r.index += part.start
            requests += done
        prepared = io.prepared(requests)
        return prepared, self.check_tokens(prepared)

    async def run(self, prepared: Prepared, http: HTTPRequest) -> list[Any]:
        """Queue the job in the engine core, await it, shape its outputs.

        A job of more than two batches' worth of tokens joins the core's queue slice by slice
        (two slices queued at a time, :func:`.limits.submit_in_slices`), so a small request
        that arrives meanwhile waits for at most about two slices instead of the whole job.
        """
        tasks = list(prepared.tasks)
        sliceable = all(v is None for v in prepared.tasks.values())  # per-request params: one job
        budget = 2 * self.llm.max_num_batched_tokens if sliceable else max(prepared.num_tokens, 1)

        gone = self.engine.watch_disconnect(http.receive)

        async def submit(chunk: list[Request]) -> list[tuple[Any, ...]]:
            res = await self.engine.submit(chunk, prepared.tasks, gone)
            return list(zip(*(res[t] for t in tasks)))  # one row per request: its output per task

        try:
            rows = await limits.submit_in_slices(submit, prepared.requests, budget)
        except ClientDisconnected as exc:
            logger.info("Client disconnected from %s; dropped its pending inputs", http.url.path)
            raise APIError("Client disconnected", 499) from exc
        finally:
            gone.cancel()
        return prepared.finish({t: [row[k] for row in rows] for k, t in enumerate(tasks)})

    async def scores(
        self,
        first: Any,
        second: Any,
        truncate: int | None,
        use_activation: bool | None,
        http: HTTPRequest,
        names: tuple[str, str] = ("text_1", "text_2"),
    ) -> tuple[list[float], int]:
        """Scores of 1:1, 1:N or N:N pairs (the engine's score processor: a cross-encoder's
        ``score`` task, else the cosine of embeddings). A cross-encoder's pairs are tokenized
        in slices, as in :meth:`prepare_prompts`."""
        io = self.llm.task_io["score"]
        if io.cross_encoder:
            params = PoolingParams(use_activation=use_activation)
            texts_1, texts_2 = await self.in_tokenizer_thread(lambda: pair_up(first, second, names))
            requests: list[Request] = []
            for part in limits.slices(texts_2):
                a, b = texts_1[part.start : part.stop], texts_2[part.start : part.stop]
                done = await self.in_tokenizer_thread(
                    lambda a=a, b=b: self.llm.make_pair_requests(a, b, params, truncate)
                )
                for r in done:
                    r.index += part.start
                requests += done
            prepared = io.cross_prepared(requests)
            n_tokens = self.check_tokens(prepared)
        else:
            bi_params = PoolingParams(use_activation=use_activation) if use_activation is not None else None
            prepared, n_tokens = await self.prepare(
                lambda: io.prepare(first, second, bi_params, truncate, names)
            )
        outs = await self.run(prepared, http)
        return [o.outputs.score for o in outs], n_tokens

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
def build_app(llm: LLM, config: ServerConfig | None = None) -> FastAPI:
    """The ASGI app serving ``llm``.

    Args:
        llm: the loaded engine.
        config: serving options (names, API key, request limits).

    Returns:
        A FastAPI app; run it with ``uvicorn.run(app, ...)``.
    """
    state = ServerState(llm, config or ServerConfig())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        state.engine.stop()

    app = FastAPI(title="vllm-pool", lifespan=lifespan)
    app.state.server = state
    install_error_handlers(app)
    cfg = state.config
    app.add_middleware(
        limits.GuardMiddleware,
        api_key=cfg.api_key,
        max_body_bytes=cfg.max_body_bytes,
        body_timeout=cfg.body_timeout,
    )  # inside the metrics: 401 / 408 / 413 answers are counted
    app.add_middleware(MetricsMiddleware, metrics=state.metrics, paths=ENDPOINTS)
    m = state.metrics

    def count(endpoint: str, n_inputs: int, n_tokens: int) -> None:
        m.inputs.inc(n_inputs, endpoint=endpoint)
        m.prompt_tokens.inc(n_tokens, endpoint=endpoint)

    @app.get("/health")
    async def health() -> Response:
        if not state.engine.alive:
            raise APIError("The engine loop has stopped", 503)
        return Response(status_code=200)

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        created = int(time.time())
        data = [
            {
                "id": name, "object": "model", "created": created, "owned_by": "vllm-pool",
                "root": llm.model_name, "parent": None, "max_model_len": llm.model_config.max_model_len,
            }
            for name in state.names
        ]  # fmt: skip
        return json_response({"object": "list", "data": data})

    @app.post("/v1/embeddings")
    async def embeddings(body: p.EmbeddingRequest, http: HTTPRequest) -> JSONResponse:
        state.check_model(body.model)
        prompts = to_prompts(body.input)
        state.check_inputs(len(prompts))
        state.check_texts(body.input, "input", allow_empty=True)
        params = PoolingParams(dimensions=body.dimensions, normalize=body.normalize)
        io = llm.task_io["embed"]
        prepared, n_tokens = await state.prepare_prompts(io, prompts, params, body.truncate_prompt_tokens)
        outs = await state.run(prepared, http)
        count("/v1/embeddings", len(outs), n_tokens)
        data = [
            {"index": i, "object": "embedding", "embedding": e}
            for i, e in enumerate(encode_batch(outs, body.encoding_format))
        ]
        return json_response(p.envelope("embd", state.model_name, data, n_tokens, header_id(http)))

    @app.post("/pooling")
    async def pooling(body: p.PoolingRequest, http: HTTPRequest) -> JSONResponse:
        state.check_model(body.model)
        is_plugin = body.input is None and body.data is not None
        task = pooling_task(body.task, llm.get_supported_tasks(), is_plugin)
        if task == "plugin":
            results, n_tokens = await run_plugin(state, body, http)
            count("/pooling", n_tokens[0], n_tokens[1])
            return json_response(p.plugin_response(results, header_id(http)))
        if body.input is None:
            raise APIError("input is required (or 'data' for an IO processor plugin)", 400, "input")
        prompts = to_prompts(body.input)
        state.check_inputs(len(prompts))
        state.check_texts(body.input, "input", allow_empty=True)
        params = PoolingParams(
            dimensions=body.dimensions, normalize=body.normalize, use_activation=body.use_activation
        )
        io = encode_processor(llm, task)
        prepared, n_tokens = await state.prepare_prompts(io, prompts, params, body.truncate_prompt_tokens)
        outs = await state.run(prepared, http)
        count("/pooling", len(outs), n_tokens)
        data = [
            {"index": i, "object": "pooling", "data": d}
            for i, d in enumerate(encode_batch(outs, body.encoding_format))
        ]
        return json_response(p.envelope("pool", state.model_name, data, n_tokens, header_id(http)))

    @app.post("/classify")
    async def classify(body: p.ClassificationRequest, http: HTTPRequest) -> JSONResponse:
        state.check_model(body.model)
        prompts = to_prompts(body.input)
        state.check_inputs(len(prompts))
        state.check_texts(body.input, "input", allow_empty=True)
        params = PoolingParams(use_activation=body.use_activation)
        io = llm.task_io["classify"]
        prepared, n_tokens = await state.prepare_prompts(io, prompts, params, body.truncate_prompt_tokens)
        outs = await state.run(prepared, http)
        count("/classify", len(outs), n_tokens)
        data = []
        for i, o in enumerate(outs):
            probs = o.outputs.data.reshape(-1)
            label = state.label(int(probs.argmax()))
            data.append({"index": i, "label": label, "probs": o.outputs.probs, "num_classes": probs.numel()})
        return json_response(p.envelope("classify", state.model_name, data, n_tokens, header_id(http)))

    async def score(body: p.ScoreRequest, http: HTTPRequest) -> JSONResponse:
        state.check_model(body.model)
        try:
            (name_1, first), (name_2, second) = body.side(True), body.side(False)
        except ValueError as exc:
            raise APIError(str(exc), 400) from exc
        if first is None or second is None:
            raise APIError(
                "Give text_1 and text_2 (or data_1 / data_2, queries / documents, queries / items)",
                400,
                name_1 if first is None else name_2,
            )
        state.check_texts(first, name_1)
        state.check_texts(second, name_2)
        n_pairs = max(len(x) if isinstance(x, list) else 1 for x in (first, second))
        state.check_inputs(n_pairs, name_2)
        scores, n_tokens = await state.scores(
            first, second, body.truncate_prompt_tokens, body.use_activation, http, (name_1, name_2)
        )
        count(http.url.path, len(scores), n_tokens)
        data = [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)]
        return json_response(p.envelope("score", state.model_name, data, n_tokens, header_id(http)))

    async def rerank(body: p.RerankRequest, http: HTTPRequest) -> JSONResponse:
        state.check_model(body.model)
        state.check_inputs(len(body.documents), "documents")
        state.check_texts(body.query, "query")
        state.check_texts(body.documents, "documents")
        truncate, names = body.truncate_prompt_tokens, ("query", "documents")
        scores, n_tokens = await state.scores(
            body.query, body.documents, truncate, body.use_activation, http, names
        )
        count(http.url.path, len(scores), n_tokens)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        if body.top_n:
            order = order[: body.top_n]
        results = []
        for i in order:
            result: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
            if body.return_documents:
                result["document"] = {"text": body.documents[i]}
            results.append(result)
        return json_response(p.rerank_response(state.model_name, results, n_tokens, header_id(http)))

    app.post("/score")(score)
    app.post("/v1/score")(score)
    app.post("/rerank")(rerank)
    app.post("/v1/rerank")(rerank)

    @app.post("/tokenize")
    async def tokenize(body: p.TokenizeRequest) -> JSONResponse:
        state.check_model(body.model)
        state.check_texts(body.prompt, "prompt")
        tok = llm.get_tokenizer()
        def encode() -> list[int]:
            with llm.input_processor.lock:  # the tokenizer's settings: one caller at a time
                return list(tok(body.prompt, add_special_tokens=body.add_special_tokens)["input_ids"])

        ids = await state.in_tokenizer_thread(encode)
        strs = tok.convert_ids_to_tokens(ids) if body.return_token_strs else None
        return json_response(
            {
                "count": len(ids),
                "max_model_len": llm.model_config.max_model_len,
                "tokens": ids,
                "token_strs": strs,
            }
        )

    @app.post("/detokenize")
    async def detokenize(body: p.DetokenizeRequest) -> JSONResponse:
        state.check_model(body.model)
        tok = llm.get_tokenizer()
        bad = [t for t in body.tokens if t < 0 or t >= len(tok)]
        if bad:
            raise APIError(f"tokens has ids outside the vocabulary [0, {len(tok)}): {bad[:5]}", 400, "tokens")
        text = await state.in_tokenizer_thread(lambda: tok.decode(body.tokens))
        return json_response({"prompt": text})

    return app
