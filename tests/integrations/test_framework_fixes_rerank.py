"""The rerankers score blank documents and blank queries, as Sentence Transformers'
``similarity`` / ``CrossEncoder.predict``, LangChain's ``CrossEncoderReranker`` and
LlamaIndex's ``SentenceTransformerRerank`` do, on the same weights."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.documents import Document  # noqa: E402
from llama_index.core.schema import NodeWithScore, TextNode  # noqa: E402
from vllm_pool.integrations.langchain import VllmPoolReranker  # noqa: E402
from vllm_pool.integrations.llamaindex import VllmPoolRerank  # noqa: E402

DOCS = ["a cat sat on the mat", "", "dogs bark", " "]
CASES = [("kitten", DOCS), ("", ["a cat sat on the mat", "dogs bark"]), ("", ["", "x"])]


def _langchain_scores(reranker: VllmPoolReranker, query: str, docs: list[str]) -> list[float]:
    documents = [Document(page_content=t, metadata={"i": i}) for i, t in enumerate(docs)]
    out = reranker.compress_documents(documents, query)
    by_index = {d.metadata["i"]: d.metadata["relevance_score"] for d in out}
    assert len(by_index) == len(docs)
    return [by_index[i] for i in range(len(docs))]


def _llamaindex_scores(rerank: VllmPoolRerank, query: str, docs: list[str]) -> list[float]:
    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.0) for i, t in enumerate(docs)]
    out = rerank.postprocess_nodes(nodes, query_str=query)
    by_id = {n.node.node_id: n.score for n in out}
    assert len(by_id) == len(docs)
    return [by_id[str(i)] for i in range(len(docs))]


@pytest.mark.filterwarnings("ignore:.*bi-encoder")
@pytest.mark.parametrize(("query", "docs"), CASES)
def test_bi_encoder_rerankers_score_blank_texts_like_sentence_transformers(st_model, query, docs) -> None:
    vectors = st_model.encode([query, *docs])
    expected = st_model.similarity(vectors[:1], vectors[1:])[0].tolist()
    assert _langchain_scores(VllmPoolReranker(top_n=None), query, docs) == pytest.approx(expected, abs=1e-4)
    assert _llamaindex_scores(VllmPoolRerank(top_n=None), query, docs) == pytest.approx(expected, abs=1e-4)
    ranked = VllmPoolReranker(top_n=None).rerank(docs, query)
    assert sorted(i for i, _ in ranked) == list(range(len(docs)))


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory) -> str:
    import tiny_models

    folder = tmp_path_factory.mktemp("blank_ce") / "ce"
    return str(tiny_models.bert(folder, cls="BertForSequenceClassification", num_labels=1))


@pytest.mark.parametrize(("query", "docs"), CASES)
def test_cross_encoder_rerankers_score_blank_texts_like_cross_encoder(cross_encoder, query, docs) -> None:
    from sentence_transformers import CrossEncoder

    reranker = VllmPoolReranker(model=cross_encoder, top_n=None)
    if "score" not in reranker.llm.get_supported_tasks():
        pytest.skip("the engine does not run this tiny model as a cross-encoder")
    expected = np.asarray(CrossEncoder(cross_encoder, device="cpu").predict([(query, d) for d in docs]))
    assert _langchain_scores(reranker, query, docs) == pytest.approx(expected.tolist(), abs=1e-5)
    rerank = VllmPoolRerank(model=cross_encoder, top_n=None)
    assert _llamaindex_scores(rerank, query, docs) == pytest.approx(expected.tolist(), abs=1e-5)
