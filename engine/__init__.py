"""vllm_pool.engine: model loading, poolers, tasks, batching and the `LLM` API."""

from vllm_pool.engine.args import EngineArgs
from vllm_pool.engine.config import PoolerConfig
from vllm_pool.engine.llm import LLM
from vllm_pool.engine.model_source import DEFAULT_MODEL
from vllm_pool.engine.outputs import (
    ClassificationOutput,
    ClassificationRequestOutput,
    EmbeddingOutput,
    EmbeddingRequestOutput,
    PoolingOutput,
    PoolingRequestOutput,
    ScoringOutput,
    ScoringRequestOutput,
    output_lists,
    stack_outputs,
)
from vllm_pool.engine.params import PoolingParams
from vllm_pool.engine.tasks import TextPrompt, TokensPrompt
from vllm_pool.engine.types import ModelNotFoundError, PoolingType, UnsupportedTaskError

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
    "PoolingType",
    "ScoringOutput",
    "ScoringRequestOutput",
    "UnsupportedTaskError",
    "output_lists",
    "stack_outputs",
    "TextPrompt",
    "TokensPrompt",
]
