"""A live server on 127.0.0.1 with the connection handling of ``vllm-pool serve`` (for tests)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any


class LiveServer:
    """uvicorn serving ``app`` on a free 127.0.0.1 port, in a thread, with the guarded protocol
    and options that ``vllm-pool serve`` uses for ``config`` (default: ``ServerConfig()``);
    ``uvicorn_kwargs`` are added to uvicorn's options."""

    api_key: str | None = None

    def __init__(self, app: Any, config: Any = None, **uvicorn_kwargs: Any) -> None:
        import uvicorn
        from vllm_pool.engine.server.connections import uvicorn_options

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        if config is None:
            from vllm_pool.engine.server import ServerConfig

            config = ServerConfig()
        options = {**uvicorn_options(config), **uvicorn_kwargs}
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **options))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()
