"""LangChain classes on the in-process engine (``pip install "vllm-pool[langchain]"``).

>>> from vllm_pool.integrations.langchain import VllmPoolEmbeddings, VllmPoolVectorStore
"""

from .._imports import require

require("langchain_core", "langchain", "langchain-core")

from .colbert_reranker import VllmPoolColBERTReranker  # noqa: E402
from .colbert_retriever import VllmPoolColBERTRetriever  # noqa: E402
from .embeddings import VllmPoolEmbeddings  # noqa: E402
from .reranker import VllmPoolReranker  # noqa: E402
from .vectorstore import VllmPoolVectorStore  # noqa: E402

VllmPoolColbertRetriever = VllmPoolColBERTRetriever
"""The spelling of the product spec (``product.md``): the same class."""

__all__ = [
    "VllmPoolColBERTReranker",
    "VllmPoolColBERTRetriever",
    "VllmPoolColbertRetriever",
    "VllmPoolEmbeddings",
    "VllmPoolReranker",
    "VllmPoolVectorStore",
]
