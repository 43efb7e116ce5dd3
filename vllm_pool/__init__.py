"""vllm-pool: an in-process pooling engine with retrievers and framework integrations.

>>> from vllm_pool import LLM, PoolingParams
"""

from vllm_pool.engine import LLM, PoolingParams

__all__ = ["LLM", "PoolingParams"]
__version__ = "0.1.0"
