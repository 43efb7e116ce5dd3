"""The FastAPI app: the spec's OpenAI-compatible endpoints over one :class:`LLM`.

``build_app(llm)`` returns an ASGI app that keeps only HTTP: parsing, limits, JSON. Input
checks, pairing and output shaping are the engine's task IO processors (``engine.task_io``),
shared with ``LLM``; every job goes to the LLM's engine core (``engine.core``), whose one
scheduler batches it with every other client's. Tokenization runs on the engine's tokenizer
thread (a small request's on the event loop) and the model on the core's thread, so the
event loop never waits on the model. What the endpoints share is :mod:`.state`. The pooling
endpoints are served through FastAPI and, for well-formed JSON, past it (:mod:`.fast_lane`):
the same functions either way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from vllm_pool.engine.llm import LLM
from vllm_pool.engine.params import PoolingParams
from vllm_pool.engine.server import limits
from vllm_pool.engine.server import protocol as p
from vllm_pool.engine.server.errors import APIError, install_error_handlers
from vllm_pool.engine.server.fast_lane import Endpoint, FastLane
from vllm_pool.engine.server.metrics import MetricsMiddleware
from vllm_pool.engine.server.pooling_api import header_id, pooling_task, run_plugin
from vllm_pool.engine.server.responses import encode_batch, json_response
from vllm_pool.engine.server.state import ServerConfig, ServerState, to_prompts
from vllm_pool.engine.task_io import encode_processor

from vllm_pool import __version__

logger = logging.getLogger(__name__)

ENDPOINTS = {
    "/v1/embeddings", "/pooling", "/classify", "/score", "/v1/score", "/rerank", "/v1/rerank",
    "/v2/rerank", "/tokenize", "/detokenize", "/v1/models", "/health", "/metrics", "/version",
}  # fmt: skip


class ServerApp(FastAPI):
    """FastAPI behind the server's own ASGI layers.

    An HTTP request passes the metrics, the guard (API key, body limits) and the fast lane
    (:mod:`.fast_lane`) first; what the fast lane leaves (other routes, the docs, bodies
    that fail validation) goes through FastAPI's own middleware and router. Per request,
    FastAPI's outer layers cost more than these three.
    """

    front: Any = None  # the server's layers around FastAPI's own stack (set by build_app)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.front is not None:
            await self.front(scope, receive, send)
        else:  # lifespan, or an app without its layers
            await super().__call__(scope, receive, send)


def build_app(llm: LLM, config: ServerConfig | None = None) -> ServerApp:
    """The ASGI app serving ``llm``.

    Args:
        llm: the loaded engine.
        config: serving options (names, API key, request limits).

    Returns:
        A FastAPI app (:class:`ServerApp`); run it with ``uvicorn.run(app, ...)``.
    """
    state = ServerState(llm, config or ServerConfig())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        state.engine.stop()

    app = ServerApp(title="vllm-pool", lifespan=lifespan)
    app.state.server = state
    install_error_handlers(app)
    m = state.metrics
    fast_routes: dict[str, Endpoint] = {}

    def post(*paths: str) -> Callable[[Endpoint], Endpoint]:
        """Serve an endpoint at ``paths`` through FastAPI and the fast lane alike."""

        def register(endpoint: Endpoint) -> Endpoint:
            for path in paths:
                app.post(path)(endpoint)
                fast_routes[path] = endpoint
            return endpoint

        return register

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

    @app.get("/version")
    async def version() -> JSONResponse:
        return json_response({"version": __version__})

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

    @post("/v1/embeddings")
    async def embeddings(body: p.EmbeddingRequest, http: HTTPRequest) -> JSONResponse:
        model = state.check_model(body.model)
        prompts = to_prompts(body.input)
        state.check_inputs(len(prompts))
        state.check_texts(body.input, "input")
        params = PoolingParams(dimensions=body.dimensions, normalize=body.normalize)
        io = llm.task_io["embed"]
        prepared, n_tokens = await state.prepare_prompts(
            io, prompts, params, body.truncate_prompt_tokens, add_special_tokens=body.add_special_tokens
        )
        outs = await state.run(prepared, http)
        count("/v1/embeddings", len(outs), n_tokens)
        data = [
            {"index": i, "object": "embedding", "embedding": e}
            for i, e in enumerate(encode_batch(outs, body.encoding_format))
        ]
        return json_response(p.envelope("embd", model, data, n_tokens, header_id(http)))

    @post("/pooling")
    async def pooling(body: p.PoolingRequest, http: HTTPRequest) -> JSONResponse:
        model = state.check_model(body.model)
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
        state.check_texts(body.input, "input")
        params = PoolingParams(
            dimensions=body.dimensions, normalize=body.normalize, use_activation=body.use_activation
        )
        io = encode_processor(llm, task)
        prepared, n_tokens = await state.prepare_prompts(
            io, prompts, params, body.truncate_prompt_tokens, add_special_tokens=body.add_special_tokens
        )
        outs = await state.run(prepared, http)
        count("/pooling", len(outs), n_tokens)
        data = [
            {"index": i, "object": "pooling", "data": d}
            for i, d in enumerate(encode_batch(outs, body.encoding_format))
        ]
        return json_response(p.envelope("pool", model, data, n_tokens, header_id(http)))

    @post("/classify")
    async def classify(body: p.ClassificationRequest, http: HTTPRequest) -> JSONResponse:
        model = state.check_model(body.model)
        prompts = to_prompts(body.input)
        state.check_inputs(len(prompts))
        state.check_texts(body.input, "input")
        params = PoolingParams(use_activation=body.use_activation)
        io = llm.task_io["classify"]
        prepared, n_tokens = await state.prepare_prompts(
            io, prompts, params, body.truncate_prompt_tokens, "classification", body.add_special_tokens
        )
        outs = await state.run(prepared, http)
        count("/classify", len(outs), n_tokens)
        data = []
        for i, o in enumerate(outs):
            probs = o.outputs.data.reshape(-1)
            label = state.label(int(probs.argmax()))
            data.append({"index": i, "label": label, "probs": o.outputs.probs, "num_classes": probs.numel()})
        return json_response(p.envelope("classify", model, data, n_tokens, header_id(http)))

    @post("/score", "/v1/score")
    async def score(body: p.ScoreRequest, http: HTTPRequest) -> JSONResponse:
        model = state.check_model(body.model)
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
        n_1, n_2 = (len(x) if isinstance(x, list) else 1 for x in (first, second))
        state.check_inputs(max(n_1, n_2), name_1 if n_1 > n_2 else name_2)  # the side over the limit
        scores, usage, n_tokens = await state.scores(
            first, second, body.truncate_prompt_tokens, body.use_activation, http, (name_1, name_2), "score"
        )
        count(http.url.path, len(scores), n_tokens)
        data = [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)]
        return json_response(p.envelope("score", model, data, usage, header_id(http)))

    @post("/rerank", "/v1/rerank", "/v2/rerank")
    async def rerank(body: p.RerankRequest, http: HTTPRequest) -> JSONResponse:
        model = state.check_model(body.model)
        state.check_inputs(len(body.documents), "documents")
        state.check_texts(body.query, "query")
        state.check_texts(body.documents, "documents")
        truncate, names = body.truncate_prompt_tokens, ("query", "documents")
        scores, usage, n_tokens = await state.scores(
            body.query, body.documents, truncate, body.use_activation, http, names
        )
        count(http.url.path, len(scores), n_tokens)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        if body.top_n > 0:  # 0 or less: all (vLLM)
            order = order[: body.top_n]
        results = []
        for i in order:
            result: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
            if body.return_documents:
                result["document"] = {"text": body.documents[i]}
            results.append(result)
        return json_response(p.rerank_response(model, results, usage, header_id(http)))

    @app.post("/tokenize")
    async def tokenize(body: p.TokenizeRequest) -> JSONResponse:
        state.check_model(body.model)
        state.check_texts(body.prompt, "prompt")
        tok = llm.get_tokenizer()

        # the text the engine tokenizes: lower-cased for a do_lower_case model (as vLLM's /tokenize)
        text = body.prompt.lower() if llm.input_processor.do_lower_case else body.prompt

        def encode() -> list[int]:
            with llm.input_processor.lock:  # the tokenizer's settings: one caller at a time
                return list(tok(text, add_special_tokens=body.add_special_tokens)["input_ids"])

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

    cfg = state.config
    guarded = limits.GuardMiddleware(
        FastLane(super(ServerApp, app).__call__, fast_routes),  # FastAPI's own stack behind it
        api_key=cfg.api_key,
        max_body_bytes=cfg.max_body_bytes,
        body_timeout=cfg.body_timeout,
    )
    app.front = MetricsMiddleware(guarded, metrics=state.metrics, paths=ENDPOINTS)  # 401/408/413 counted
    return app
