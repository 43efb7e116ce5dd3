"""LangChain's own standard test suites (langchain-tests), run on the real default model."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402
from langchain_tests.integration_tests import (  # noqa: E402
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)
from langchain_tests.unit_tests import EmbeddingsUnitTests  # noqa: E402
from vllm_pool.integrations.langchain import (  # noqa: E402
    VllmPoolColBERTRetriever,
    VllmPoolEmbeddings,
    VllmPoolVectorStore,
)

TEXTS = [
    "json.loads parses a JSON document from a string into Python objects.",
    "subprocess.run runs a command and waits for it to complete.",
    "hashlib.sha256 returns a SHA-256 hash object.",
    "csv.reader iterates over the rows of a CSV file.",
    "tempfile.TemporaryDirectory creates a directory that is removed on exit.",
]


class TestVllmPoolEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[VllmPoolEmbeddings]:
        return VllmPoolEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": "sentence-transformers/all-MiniLM-L6-v2"}


class TestVllmPoolEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[VllmPoolEmbeddings]:
        return VllmPoolEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": "sentence-transformers/all-MiniLM-L6-v2", "batch_size": 2}


class TestVllmPoolColBERTRetriever(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[VllmPoolColBERTRetriever]:
        return VllmPoolColBERTRetriever.from_texts  # type: ignore[return-value]

    @property
    def retriever_constructor_params(self) -> dict:
        return {"texts": TEXTS, "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "How do I parse JSON?"


class TestVllmPoolVectorStore(VectorStoreIntegrationTests):
    """The suite as written: LangChain's deterministic fake embeddings."""

    @pytest.fixture
    def vectorstore(self) -> VectorStore:
        return VllmPoolVectorStore(embedding=self.get_embeddings())


class TestVllmPoolVectorStoreWithVllmPoolEmbeddings(VectorStoreIntegrationTests):
    """The same suite with our own embeddings (all-MiniLM-L6-v2) inside the store."""

    @staticmethod
    def get_embeddings() -> Embeddings:
        return VllmPoolEmbeddings()

    @pytest.fixture
    def vectorstore(self) -> VectorStore:
        return VllmPoolVectorStore(embedding=self.get_embeddings())
