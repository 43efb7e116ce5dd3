"""The JSON endpoints' short path past FastAPI's routing and dependency injection.

Under load the event loop, not the model, bounds a server of short texts on a few CPU
cores: every request pays for HTTP parsing, routing, validation, tokenization and JSON.
FastAPI's part of that (its exception and exit-stack middleware, route matching,
dependency resolution, body parsing and validation) was about a third of the event loop's
time per request. :class:`FastLane` sits inside the app's own middleware (the API key,
body limits and metrics still apply) and hands a ``POST`` to one of its routes straight to
the endpoint: the body through ``orjson`` and the request model's ``model_validate``, as
FastAPI validates it. Only well-formed requests take this path: a body that is not JSON,
another content type, or a body that fails validation goes on to FastAPI, which answers
it exactly as before, so both paths give the same answers and the same errors.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from vllm_pool.engine.server.errors import exception_response
from vllm_pool.engine.server.limits import replay

try:
    from orjson import loads as _loads
except ImportError:  # the standard library's parser
    _loads = json.loads

Endpoint = Callable[[Any, Request], Awaitable[Response]]


def request_model(endpoint: Endpoint) -> type[BaseModel]:
    """The pydantic model of an endpoint's ``body`` argument (its annotation)."""
    return typing.get_type_hints(endpoint)["body"]


class FastLane:
    """ASGI middleware: well-formed JSON ``POST`` requests to ``routes`` skip FastAPI.

    Args:
        app: the wrapped app (FastAPI), which serves every other request.
        routes: ``{path: endpoint}``; an endpoint takes the validated body (the model of
            its ``body`` annotation) and the request, and returns the response. The same
            functions are FastAPI's routes for these paths.
    """

    def __init__(self, app: Any, routes: dict[str, Endpoint]) -> None:
        self.app = app
        self.routes = {path: (request_model(fn), fn) for path, fn in routes.items()}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        model, endpoint = route
        message = await receive()  # the whole body: the app's body guard read it first
        request = None
        if message["type"] == "http.request" and not message.get("more_body", False):
            try:
                request = model.model_validate(_loads(message.get("body", b"")))
            except (ValueError, TypeError):  # invalid JSON or fields: FastAPI's own answer
                pass
        if request is None:
            await self.app(scope, replay(message, receive), send)
            return
        try:
            response = await endpoint(request, Request(scope, receive))
        except Exception as exc:  # noqa: BLE001 - answered as the app's error handlers answer
            response = exception_response(exc, scope["path"])
        await response(scope, receive, send)


def _is_json(scope: dict[str, Any]) -> bool:
    for name, value in scope["headers"]:
        if name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False
