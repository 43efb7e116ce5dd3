"""vllm-pool: an in-process pooling engine with retrievers and framework integrations.

>>> from vllm_pool import LLM, PoolingParams
"""

from vllm_pool.engine import (
    DEFAULT_MODEL,
    LLM,
    ClassificationOutput,
    ClassificationRequestOutput,
    EmbeddingOutput,
    EmbeddingRequestOutput,
    EngineArgs,
    ModelNotFoundError,
    PoolerConfig,
    PoolingOutput,
    PoolingParams,
    PoolingRequestOutput,
    ScoringOutput,
    ScoringRequestOutput,
    TextPrompt,
    TokensPrompt,
    UnsupportedTaskError,
    output_lists,
    stack_outputs,
)

__all__ = [
    "DEFAULT_MODEL",
    "LLM",
    "ClassificationOutput",
    "ClassificationRequestOutput",
    "EmbeddingOutput",
    "EmbeddingRequestOutput",
    "EngineArgs",
    "ModelNotFoundError",
    "PoolerConfig",
    "PoolingOutput",
    "PoolingParams",
    "PoolingRequestOutput",
    "ScoringOutput",
    "ScoringRequestOutput",
    "TextPrompt",
    "TokensPrompt",
    "UnsupportedTaskError",
    "output_lists",
    "stack_outputs",
]
__version__ = "0.1.0"
