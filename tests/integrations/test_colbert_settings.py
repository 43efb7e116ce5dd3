"""ColBERT encoder settings as retriever fields (both frameworks), saved and checked on load;
long documents as windows; the ColBERT compressor and node postprocessor."""

from __future__ import annotations

import inspect
import json

import colbert_checkpoints
import numpy as np
import pytest
import tiny_models
from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from vllm_pool.integrations import _colbert
from vllm_pool.integrations.langchain import VllmPoolColBERTReranker
from vllm_pool.integrations.langchain import VllmPoolColBERTRetriever as LCRetriever
from vllm_pool.integrations.llamaindex import VllmPoolColBERTRerank
from vllm_pool.integrations.llamaindex import VllmPoolColBERTRetriever as LIRetriever
from vllm_pool.retrievers import ColBERTConfig, ColBERTEncoder, IndexFormatError, MultiVectorIndex, rerank

TEXTS = ["Kittens are young cats.", "Python is a programming language.", "Dogs bark at night."]
FILLER = " ".join(["The weather report mentioned clouds, rain and wind over the northern hills."] * 30)
LONG = FILLER + " The secret password of the vault is pineapple."
MINILM_LIMIT = 256  # all-MiniLM-L6-v2's max_model_len: a plain model's queries may use all of it


def test_every_encoder_setting_is_a_field_of_every_class():
    assert _colbert.ENCODER_SETTINGS == ColBERTConfig.field_names()
    for cls in (LCRetriever, VllmPoolColBERTReranker, VllmPoolColBERTRerank):
        assert set(ColBERTConfig.field_names()) <= set(cls.model_fields)
    params = inspect.signature(LIRetriever.__init__).parameters
    assert set(ColBERTConfig.field_names()) <= set(params)


def test_unknown_keywords_raise():
    with pytest.raises(ValueError, match="mask_augmentation"):
        LCRetriever(mask_augmentation=False)
    with pytest.raises(TypeError, match="mask_augmentation"):
        LIRetriever(mask_augmentation=False)
    with pytest.raises(ValueError, match="bogus"):
        VllmPoolColBERTReranker(bogus=1)
    with pytest.raises(ValueError, match="bogus"):
        VllmPoolColBERTRerank(bogus=1)


def test_defaults_and_overrides_with_minilm():
    lc = LCRetriever()
    assert lc.colbert_config == ColBERTConfig(query_maxlen=MINILM_LIMIT)  # a plain model: no expansion
    aug = LCRetriever(mask_augment=True, query_maxlen=24)
    assert aug.colbert_config.mask_augment and aug.colbert_config.query_maxlen == 24
    assert len(aug.encoder.query_token_ids(["kitten"])[0]) == 24
    li = LIRetriever(mask_augment=False, doc_maxlen=64)
    assert li.colbert_config == ColBERTConfig(query_maxlen=MINILM_LIMIT, doc_maxlen=64)


def test_kitten_ranks_cats_first():
    retriever = LCRetriever.from_texts(TEXTS, k=1)
    assert retriever.invoke("kitten")[0].page_content == "Kittens are young cats."


def test_checkpoint_settings_are_the_defaults(tmp_path):
    base = tiny_models.bert(tmp_path / "base")
    meta = {"query_maxlen": 16, "doc_maxlen": 40, "query_token_id": "[unused0]", "doc_token_id": "[unused1]"}
    folder = colbert_checkpoints.save_hf_colbert(tmp_path / "hf_colbert", base, 12, meta)
    retriever = LCRetriever(model=str(folder))
    cfg = retriever.colbert_config
    assert (cfg.query_maxlen, cfg.doc_maxlen, cfg.query_marker) == (16, 40, "[unused0]")
    assert cfg.mask_augment
    assert retriever.index.dim == 12
    li = LIRetriever(model=str(folder), mask_augment=False)
    assert li.colbert_config.query_marker == "[unused0]" and not li.colbert_config.mask_augment


def test_saved_retriever_records_and_checks_its_settings(tmp_path):
    retriever = LCRetriever.from_texts(TEXTS, k=2, query_marker=None, doc_maxlen=64)
    retriever.save(tmp_path / "lc")
    settings = _colbert.load(tmp_path / "lc")[1]
    assert settings["model"] == retriever.model and settings["embedding_dim"] == 384
    assert settings["colbert"] == ColBERTConfig(query_maxlen=MINILM_LIMIT, doc_maxlen=64).to_settings()
    loaded = LCRetriever.load(tmp_path / "lc", k=1, doc_maxlen=64)
    assert loaded.colbert_config == retriever.colbert_config and loaded.k == 1
    assert loaded.invoke("kitten")[0].page_content == "Kittens are young cats."
    with pytest.raises(ValueError, match=r"mask_augment: saved False, given True"):
        LCRetriever.load(tmp_path / "lc", mask_augment=True)
    with pytest.raises(ValueError, match=r"query_marker: saved None, given '\[unused0\]'"):
        LCRetriever.load(tmp_path / "lc", query_marker="[unused0]")
    with pytest.raises(ValueError, match="model: saved"):
        LCRetriever.load(tmp_path / "lc", model="some/other-model")

    li = LIRetriever.from_nodes([TextNode(text=t, id_=str(i)) for i, t in enumerate(TEXTS)], doc_maxlen=48)
    li.save(tmp_path / "li")
    with pytest.raises(ValueError, match=r"doc_maxlen: saved 48, given 180"):
        LIRetriever.load(tmp_path / "li", doc_maxlen=180)
    assert LIRetriever.load(tmp_path / "li").colbert_config.doc_maxlen == 48


def test_split_long_documents_in_both_retrievers(tmp_path, caplog):
    docs = [LONG, *TEXTS]
    cut = LCRetriever.from_texts(docs, ids=["long", "a", "b", "c"], k=1)
    assert "documents are longer than doc_maxlen" in caplog.text
    split = LCRetriever.from_texts(docs, ids=["long", "a", "b", "c"], k=1, split_long_documents=True)
    (hit,) = split.invoke("What is the vault password?")
    assert hit.id == "long" and hit.page_content == LONG  # the parent's whole text
    assert cut.invoke("What is the vault password?")[0].metadata["score"] < hit.metadata["score"]
    assert len(split.invoke("clouds and rain", k=4)) == 4  # distinct documents, not windows
    split.save(tmp_path / "split")
    loaded = LCRetriever.load(tmp_path / "split", k=1)
    assert loaded.split_long_documents and loaded.invoke("vault password")[0].id == "long"
    assert split.delete(["long"]) == 1 and len(split.index) == 3
    split.batch_size = 1  # a bad text in a later batch: nothing of the call is added
    with pytest.raises(TypeError, match=r"texts\[1\] must be a string"):
        split.add_texts([LONG, 7], ids=["long", "empty"])
    assert len(split.index) == 3 and split.invoke("vault password")[0].id != "long"

    li = LIRetriever.from_nodes(
        [TextNode(text=t, id_=i) for i, t in zip(["long", "a"], [LONG, TEXTS[0]])],
        similarity_top_k=1,
        split_long_documents=True,
    )
    (res,) = li.retrieve("What is the vault password?")
    assert res.node.node_id == "long" and res.node.text == LONG


def test_langchain_colbert_compressor():
    docs = [Document(page_content=t, metadata={"i": i}) for i, t in enumerate(TEXTS)]
    reranker = VllmPoolColBERTReranker(top_n=2)
    out = reranker.compress_documents(docs, "kitten")
    assert [d.metadata["i"] for d in out][0] == 0 and len(out) == 2
    assert "relevance_score" not in docs[0].metadata  # inputs unchanged
    want = rerank("kitten", TEXTS, 2, encoder=ColBERTEncoder.from_llm(reranker.llm))
    assert [(d.metadata["i"], d.metadata["relevance_score"]) for d in out] == [
        (i, pytest.approx(s, rel=1e-5)) for i, s in want
    ]
    assert reranker.compress_documents([], "kitten") == []
    threshold = VllmPoolColBERTReranker(top_n=None, score_threshold=want[0][1] - 1e-3)
    assert len(threshold.compress_documents(docs, "kitten")) == 1


def test_llamaindex_colbert_postprocessor():
    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.1 * i) for i, t in enumerate(TEXTS)]
    post = VllmPoolColBERTRerank(top_n=1, keep_retrieval_score=True)
    out = post.postprocess_nodes(nodes, QueryBundle("kitten"))
    assert [n.node.node_id for n in out] == ["0"] and out[0].node.metadata["retrieval_score"] == 0.0
    want = rerank("kitten", TEXTS, 1, encoder=ColBERTEncoder.from_llm(post.llm))
    assert out[0].score == pytest.approx(want[0][1], rel=1e-5)
    with pytest.raises(ValueError, match="needs a query"):
        post.postprocess_nodes(nodes)


# -- the saved retriever folder: all or nothing, truncate, index_kwargs, old formats -------
def _index(ids: list[str], seed: int, **kwargs) -> MultiVectorIndex:
    rng = np.random.default_rng(seed)
    return MultiVectorIndex.from_vectors(
        [rng.standard_normal((5, 16)).astype(np.float32) for _ in ids], ids=ids, **kwargs
    )


def _settings(doc_maxlen: int, truncate: bool | None = None) -> dict:
    return _colbert.retriever_settings(
        "m", 16, ColBERTConfig(doc_maxlen=doc_maxlen), False, 32, truncate=truncate
    )


def test_interrupted_retriever_save_keeps_the_previous_one(tmp_path, monkeypatch):
    from vllm_pool.retrievers import index_folder

    path = tmp_path / "ret"
    _colbert.save(path, _index(["a"], 0), _settings(64))
    new = _index(["b", "c"], 1)

    def killed(folder):
        raise KeyboardInterrupt("killed while writing the index")

    def killed_save_keeps_the_previous_one():
        with pytest.raises(KeyboardInterrupt):
            _colbert.save(path, new, _settings(300))
        monkeypatch.undo()
        index, settings = _colbert.load(path)
        assert index.ids() == ["a"] and settings["colbert"]["doc_maxlen"] == 64

    monkeypatch.setattr(new, "save", killed)
    killed_save_keeps_the_previous_one()
    switches = []

    def checkpoint(step):  # the index's own save switches first, then the retriever's folder
        switches.append(step)
        if switches.count("pointer-written") == 2:
            raise KeyboardInterrupt("killed before the retriever's switch")

    monkeypatch.setattr(index_folder, "_checkpoint", checkpoint)
    killed_save_keeps_the_previous_one()
    _colbert.save(path, new, _settings(300))
    index, settings = _colbert.load(path)
    assert index.ids() == ["b", "c"] and settings["colbert"]["doc_maxlen"] == 300
    versions = [p.name for p in path.iterdir() if p.name.startswith("v-")]
    assert len(versions) == 1 and not [p for p in path.iterdir() if p.name.startswith(".tmp-")]


def test_flat_layout_of_older_saves_is_read_then_replaced(tmp_path):
    path = tmp_path / "ret"
    path.mkdir()
    (path / "colbert.json").write_text(json.dumps({"format_version": 2, **_settings(64)}))
    _index(["a"], 0).save(path / "index")  # the older save: colbert.json and index/ at the top
    index, settings = _colbert.load(path)
    assert index.ids() == ["a"] and settings["colbert"]["doc_maxlen"] == 64
    _colbert.save(path, _index(["b"], 1), _settings(80))
    assert not (path / "colbert.json").exists() and not (path / "index").exists()
    index, settings = _colbert.load(path)
    assert index.ids() == ["b"] and settings["colbert"]["doc_maxlen"] == 80


def test_truncate_is_saved_and_given_values_win(tmp_path):
    _colbert.save(tmp_path / "off", _index(["a"], 0), _settings(64, truncate=False))
    assert _colbert.load_arguments(tmp_path / "off", {})[1]["truncate"] is False
    assert _colbert.load_arguments(tmp_path / "off", {"truncate": True})[1]["truncate"] is True
    _colbert.save(tmp_path / "unknown", _index(["a"], 0), _settings(64))  # not recorded: the class default
    assert "truncate" not in _colbert.load_arguments(tmp_path / "unknown", {})[1]


def test_index_kwargs_apply_to_the_loaded_index(tmp_path):
    _colbert.save(tmp_path / "r", _index(["a", "b"], 0, index_type="plaid"), _settings(64))
    given = {"index_kwargs": {"ncells": 4, "exact_filter_limit": 1, "device": "cpu", "index_type": "plaid"}}
    index, args = _colbert.load_arguments(tmp_path / "r", given)
    assert (index.config["ncells"], index.config["exact_filter_limit"], index.config["device"]) == (
        4,
        1,
        "cpu",
    )
    assert (
        args["index_kwargs"] == given["index_kwargs"]
        and index.search(index.get(["b"])[0].vectors, k=1)[0][0].id == "b"
    )
    with pytest.raises(ValueError, match=r"index_type: saved 'plaid', given 'flat'"):
        _colbert.load_arguments(tmp_path / "r", {"index_kwargs": {"index_type": "flat"}})
    with pytest.raises(ValueError, match="ncells must be"):
        _colbert.load_arguments(tmp_path / "r", {"index_kwargs": {"ncells": 0}})
    with pytest.raises(TypeError, match="bogus"):
        _colbert.load_arguments(tmp_path / "r", {"index_kwargs": {"bogus": 1}})


def test_retrievers_load_with_index_kwargs(tmp_path):
    LCRetriever.from_texts(TEXTS, k=1).save(tmp_path / "lc")
    loaded = LCRetriever.load(tmp_path / "lc", index_kwargs={"exact_filter_limit": 3})
    assert loaded.index.config["exact_filter_limit"] == 3
    assert loaded.invoke("kitten")[0].page_content == "Kittens are young cats."
    li = LIRetriever.load(tmp_path / "lc", index_kwargs={"candidates_per_token": 8})
    assert li.index.config["candidates_per_token"] == 8


def test_format_version_1_and_malformed_settings(tmp_path):
    path = tmp_path / "v1"
    old = {"format_version": 1, "model": "m", "query_maxlen": 16, "doc_maxlen": 40, "query_marker": None}
    _colbert.save(path, _index(["a"], 0), _settings(64))
    settings_file = next(path.glob("v-*")) / "colbert.json"
    settings_file.write_text(json.dumps({**old, "doc_marker": "[unused1]"}))
    colbert = _colbert.load(path)[1]["colbert"]
    assert colbert == {
        "query_maxlen": 16,
        "doc_maxlen": 40,
        "query_marker": None,
        "doc_marker": "[unused1]",
        "mask_augment": True,
    }
    settings_file.write_text(json.dumps(old))  # a key missing
    with pytest.raises(IndexFormatError, match="doc_marker"):
        _colbert.load(path)
    settings_file.write_text(json.dumps({"format_version": 2, **_settings(64), "model": 7}))
    with pytest.raises(IndexFormatError, match="'model'"):
        _colbert.load(path)
    bad = _settings(64)
    bad["colbert"]["doc_maxlen"] = "long"
    settings_file.write_text(json.dumps({"format_version": 2, **bad}))
    with pytest.raises(IndexFormatError, match="doc_maxlen"):
        _colbert.load(path)


def test_both_retrievers_keep_truncate_off_through_save_and_load(tmp_path):
    """A retriever built with ``truncate=False`` refuses over-long documents after a reload too."""
    from vllm_pool.integrations.langchain import VllmPoolColBERTRetriever as LangChainRetriever
    from vllm_pool.integrations.llamaindex import VllmPoolColBERTRetriever as LlamaIndexRetriever

    for cls in (LangChainRetriever, LlamaIndexRetriever):
        folder = tmp_path / cls.__module__.replace(".", "_")
        cls(truncate=False).save(folder)
        loaded = cls.load(folder)
        assert loaded.truncate is False
        assert cls.load(folder, truncate=True).truncate is True  # a value given at load wins
