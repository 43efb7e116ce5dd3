"""LlamaIndex classes on the in-process engine (``pip install "vllm-pool[llamaindex]"``).

>>> from vllm_pool.integrations.llamaindex import VllmPoolEmbedding, VllmPoolRerank
"""

from .._imports import require

require("llama_index.core", "llamaindex", "llama-index-core")

from .colbert_rerank import VllmPoolColBERTRerank  # noqa: E402
from .colbert_retriever import VllmPoolColBERTRetriever  # noqa: E402
from .embedding import VllmPoolEmbedding  # noqa: E402
from .rerank import VllmPoolRerank  # noqa: E402

VllmPoolColbertRetriever = VllmPoolColBERTRetriever
"""The spelling of the LangChain class in the product spec (``product.md``): the same class."""

__all__ = [
    "VllmPoolColBERTRerank",
    "VllmPoolColBERTRetriever",
    "VllmPoolColbertRetriever",
    "VllmPoolEmbedding",
    "VllmPoolRerank",
]
