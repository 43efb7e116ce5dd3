"""Retrieval on top of the engine: FAISS dense and ColBERT multi-vector indexes.

>>> from vllm_pool.retrievers import DenseIndex, MultiVectorIndex, maxsim, rerank

Long ColBERT documents split into windows: :mod:`vllm_pool.retrievers.long_documents`.
"""

from . import long_documents
from .colbert import ColBERTEncoder
from .colbert_config import ColBERTConfig
from .colbert_rerank import rerank
from .dense import DenseIndex
from .encoders import EngineTextEmbedder, EngineTokenEncoder, TextEmbedder, TokenEncoder
from .maxsim import maxsim, pad_token_vectors
from .multivector import MultiVectorIndex
from .sharded import ShardedIndex, load_index, merge_indexes
from .types import Filter, Hit, IndexFormatError, Metadata, Record

__all__ = [
    "ColBERTConfig",
    "ColBERTEncoder",
    "DenseIndex",
    "EngineTextEmbedder",
    "EngineTokenEncoder",
    "Filter",
    "Hit",
    "IndexFormatError",
    "Metadata",
    "MultiVectorIndex",
    "Record",
    "ShardedIndex",
    "TextEmbedder",
    "TokenEncoder",
    "load_index",
    "long_documents",
    "maxsim",
    "merge_indexes",
    "pad_token_vectors",
    "rerank",
]
