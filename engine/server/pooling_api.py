"""``/pooling`` as vLLM's server runs it: the default task, and IO processor plugin requests.

A request with ``data`` (vLLM's ``IOProcessorRequest``) or ``task: "plugin"`` goes to the
engine's IO processor plugin (``--io-processor-plugin``): the plugin turns ``data`` into
prompts, the engine pools them, and the plugin's ``post_process`` result is the response's
``data`` (vLLM's ``IOProcessorResponse``: ``request_id``, ``created_at``, ``data``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Request as HTTPRequest
from vllm_pool.engine.pooler import unsupported_message
from vllm_pool.engine.server import protocol as p
from vllm_pool.engine.server.errors import APIError
from vllm_pool.engine.task_io import encode_processor

if TYPE_CHECKING:
    from vllm_pool.engine.server.state import ServerState


def header_id(http: HTTPRequest) -> str | None:
    """The client's ``X-Request-Id`` (vLLM builds response ids from it)."""
    return http.headers.get("X-Request-Id")


def pooling_task(requested: str | None, supported: tuple[str, ...], plugin_request: bool) -> str:
    """The task of a ``/pooling`` request, as vLLM's server picks it: a ``data`` request is the
    ``plugin`` task; without ``task``: ``token_embed``, else ``token_classify``, else ``plugin``."""
    if plugin_request:
        if requested not in (None, "plugin"):
            message = f"A request with 'data' is a plugin request: task must be 'plugin', not {requested!r}"
            raise APIError(message, 400, "task")
        requested = "plugin"
    if requested is None:
        for task in ("token_embed", "token_classify", "plugin"):
            if task in supported:
                return task
        raise APIError(f"pooling_task must be one of {supported}.", 400, "task")
    if requested == "plugin" and "plugin" not in supported:
        raise APIError(unsupported_message("plugin", list(supported)), 400, "task")
    if requested not in supported:
        raise APIError(f"Task {requested} is not supported, it must be one of {supported}.", 400, "task")
    return requested


async def run_plugin(
    state: ServerState, body: p.PoolingRequest, http: HTTPRequest
) -> tuple[Any, tuple[int, int]]:
    """Run a plugin request: ``(the plugin's result, (inputs, prompt tokens))``.

    The plugin's ``pre_process`` / ``post_process`` run on the engine's tokenizer thread (its
    errors are 400s); the prompts go through the same checks, limits and queue as ``/pooling``.
    """
    llm = state.llm
    processor = llm.io_processor
    assert processor is not None
    data = body.data if body.data is not None else body.input
    prompts = await state.in_tokenizer_thread(lambda: processor.pre_process(data))
    state.check_inputs(len(prompts), "data")
    io = encode_processor(llm, processor.pooling_task)
    prepared, n_tokens = await state.prepare_prompts(io, prompts, None, body.truncate_prompt_tokens)
    outs = await state.run(prepared, http)
    results = await state.in_tokenizer_thread(lambda: processor.post_process(data, outs))
    return results, (len(outs), n_tokens)
