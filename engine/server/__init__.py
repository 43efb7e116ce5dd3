"""vllm_pool.engine.server: the OpenAI-compatible HTTP server (``vllm-pool serve``).

Needs the ``server`` extra (FastAPI + uvicorn)::

    from vllm_pool import LLM
    from vllm_pool.engine.server import build_app

    app = build_app(LLM("sentence-transformers/all-MiniLM-L6-v2"))
"""

from vllm_pool.engine.server.app import build_app
from vllm_pool.engine.server.engine_client import EngineClient
from vllm_pool.engine.server.state import ServerConfig

__all__ = ["EngineClient", "ServerConfig", "build_app"]
