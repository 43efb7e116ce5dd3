"""The in-process server of the ported vLLM tests (vLLM's start a ``RemoteOpenAIServer``)."""

from __future__ import annotations

from typing import Any

import httpx


def make_client(app: Any) -> httpx.AsyncClient:
    """An in-process client of ``app`` (vLLM's tests start a server process instead)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60)


def served_client(llm: Any, name: str = "m") -> httpx.AsyncClient:
    """A client of ``llm`` served under ``name`` (vLLM's tests send a model name)."""
    from vllm_pool.engine.server import ServerConfig, build_app

    return make_client(build_app(llm, ServerConfig(served_model_names=[name])))


def error_object(response: httpx.Response) -> dict[str, Any]:
    """The error object: vLLM's newer servers nest it under ``"error"``, the spec's (and our)
    format is the flat ``{"object": "error", "message", "type", "param", "code"}``."""
    body = response.json()
    return body.get("error", body)
