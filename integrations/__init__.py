"""Framework classes over the public engine and retriever APIs.

Each framework is imported only when its sub-package is::

    from vllm_pool.integrations.langchain import VllmPoolEmbeddings      # pip install "vllm-pool[langchain]"
    from vllm_pool.integrations.llamaindex import VllmPoolEmbedding      # pip install "vllm-pool[llamaindex]"

Both share one loaded engine per configuration (:mod:`._engines`).
"""

from ._engines import EngineOptions, clear_engine_cache, get_engine

__all__ = ["EngineOptions", "clear_engine_cache", "get_engine"]
