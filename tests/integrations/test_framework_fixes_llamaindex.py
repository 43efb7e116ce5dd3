"""LlamaIndex ColBERT retriever fixes: nodes come back whole (relationships, ``ref_doc_id``,
excluded metadata keys) as from LlamaIndex's own ``VectorStoreIndex``; ``delete_ref_doc``;
``delete`` refusing a single string; indexes saved without the stored node still load."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, VectorStoreIndex  # noqa: E402
from llama_index.core.node_parser import SentenceSplitter  # noqa: E402
from llama_index.core.schema import MetadataMode, NodeRelationship, TextNode  # noqa: E402
from vllm_pool.integrations import _colbert  # noqa: E402

NODE_KEY = "__vllm_pool_node__"  # vllm_pool.integrations._records.NODE_KEY
from vllm_pool.integrations.llamaindex import VllmPoolColBERTRetriever, VllmPoolEmbedding  # noqa: E402

SECRET = "/secret/path.txt"


def _documents() -> list[Document]:
    common = {
        "excluded_llm_metadata_keys": ["file_path"],
        "excluded_embed_metadata_keys": ["file_path"],
        "metadata_template": "{key}=>{value}",
    }
    return [
        Document(text="Cats are small furry animals. They purr. " * 3 + "Kittens play. " * 3,
                 doc_id="doc-1", metadata={"file_path": SECRET, "title": "Pets"}, **common),
        Document(text="The stock market fell sharply today. Investors sold shares. " * 3,
                 doc_id="doc-2", metadata={"file_path": "/other.txt", "title": "Money"}, **common),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def nodes() -> list:
    return SentenceSplitter(chunk_size=40, chunk_overlap=0).get_nodes_from_documents(_documents())


@pytest.fixture(scope="module")
def reference(nodes) -> VectorStoreIndex:
    """LlamaIndex's own vector store index over the same nodes."""
    return VectorStoreIndex(nodes, embed_model=VllmPoolEmbedding())


def _comparable(node) -> dict:
    data = node.model_dump(mode="json")
    data.pop("embedding", None)
    return data


def test_retrieved_nodes_are_the_nodes_added(nodes, reference: VectorStoreIndex) -> None:
    assert len({n.ref_doc_id for n in nodes}) == 2 and len(nodes) > 2
    retriever = VllmPoolColBERTRetriever.from_nodes(nodes, similarity_top_k=len(nodes))
    hits = retriever.retrieve("kitten")
    assert len(hits) == len(nodes)
    theirs = {
        h.node.node_id: h.node for h in reference.as_retriever(similarity_top_k=len(nodes)).retrieve("kitten")
    }
    for hit in hits:
        assert _comparable(hit.node) == _comparable(theirs[hit.node.node_id])  # as VectorStoreIndex gives it
        assert type(hit.node) is type(theirs[hit.node.node_id])
        original = {n.node_id: n for n in nodes}[hit.node.node_id]
        assert hit.node.ref_doc_id == original.ref_doc_id
        assert hit.node.relationships == original.relationships
        assert hit.node.excluded_llm_metadata_keys == ["file_path"]
        for mode in (MetadataMode.LLM, MetadataMode.EMBED, MetadataMode.ALL, MetadataMode.NONE):
            assert hit.node.get_content(mode) == original.get_content(mode)
        assert SECRET not in hit.node.get_content(MetadataMode.LLM)
        assert NODE_KEY not in hit.node.metadata
    async_hits = asyncio.run(retriever.aretrieve("kitten"))
    assert [_comparable(h.node) for h in async_hits] == [_comparable(h.node) for h in hits]


def test_filters_see_the_user_metadata_only(nodes) -> None:
    retriever = VllmPoolColBERTRetriever.from_nodes(nodes, similarity_top_k=10)
    seen: list[set] = []

    def predicate(metadata: dict) -> bool:
        seen.append(set(metadata))
        return metadata["title"] == "Money"

    money = VllmPoolColBERTRetriever(retriever.index, filters=predicate, similarity_top_k=10)
    assert {h.node.ref_doc_id for h in money.retrieve("kitten")} == {"doc-2"}
    assert seen and all(keys == {"file_path", "title"} for keys in seen)
    by_dict = VllmPoolColBERTRetriever(retriever.index, filters={"title": "Pets"}, similarity_top_k=10)
    assert {h.node.ref_doc_id for h in by_dict.retrieve("stocks")} == {"doc-1"}


def test_delete_ref_doc_removes_every_node_of_a_document(nodes, reference: VectorStoreIndex) -> None:
    retriever = VllmPoolColBERTRetriever.from_nodes(nodes, similarity_top_k=len(nodes))
    n_doc1 = sum(n.ref_doc_id == "doc-1" for n in nodes)
    assert retriever.delete_ref_doc("doc-1") == n_doc1
    assert len(retriever.index) == len(nodes) - n_doc1
    assert {h.node.ref_doc_id for h in retriever.retrieve("kitten")} == {"doc-2"}
    assert retriever.delete_ref_doc("doc-1") == 0 and retriever.delete_ref_doc("missing") == 0
    with pytest.raises(TypeError, match="ref_doc_id must be a string"):
        retriever.delete_ref_doc(["doc-2"])  # type: ignore[arg-type]


def test_delete_ref_doc_with_windows_and_whole_documents() -> None:
    docs = _documents()
    whole = VllmPoolColBERTRetriever.from_documents(docs, doc_maxlen=24, split_long_documents=True,
                                                    window_overlap=4)  # fmt: skip
    assert len(whole.index.ids()) > 2  # windows
    hit = whole.retrieve("kitten")[0].node
    assert hit.node_id == "doc-1" and hit.excluded_llm_metadata_keys == ["file_path"]
    assert whole.delete_ref_doc("doc-1") == 1  # a Document added whole is its own source
    assert [h.node.node_id for h in whole.retrieve("kitten")] == ["doc-2"]


def test_delete_refuses_a_single_string() -> None:
    texts, ids = ["one", "two", "twelve"], ["1", "2", "12"]
    retriever = VllmPoolColBERTRetriever.from_nodes([TextNode(text=t, id_=i) for t, i in zip(texts, ids)])
    with pytest.raises(TypeError, match="ids must be a list of ids, not a single string"):
        retriever.delete("12")
    assert sorted(retriever.index.ids()) == ["1", "12", "2"]
    assert retriever.delete(["12"]) == 1


def test_saved_retriever_keeps_nodes_and_old_indexes_still_load(nodes, tmp_path) -> None:
    retriever = VllmPoolColBERTRetriever.from_nodes(nodes, similarity_top_k=2)
    retriever.save(tmp_path / "saved")
    loaded = VllmPoolColBERTRetriever.load(tmp_path / "saved")
    hit = loaded.retrieve("kitten")[0].node
    assert hit.ref_doc_id == "doc-1" and hit.relationships[NodeRelationship.SOURCE].node_id == "doc-1"
    assert loaded.delete_ref_doc("doc-2") == sum(n.ref_doc_id == "doc-2" for n in nodes)

    # an index written before nodes were stored: records of id, text and metadata only
    old = VllmPoolColBERTRetriever(similarity_top_k=1)
    _colbert.add_texts(old.index, old.encoder, ["cats purr", "stocks fell"], [{"a": 1}, {"a": 2}], ["x", "y"])
    old.save(tmp_path / "old")
    node = VllmPoolColBERTRetriever.load(tmp_path / "old").retrieve("kitten")[0].node
    assert type(node) is TextNode
    assert (node.node_id, node.text, node.metadata, node.ref_doc_id) == ("x", "cats purr", {"a": 1}, None)
    assert VllmPoolColBERTRetriever.load(tmp_path / "old").delete_ref_doc("x") == 0
