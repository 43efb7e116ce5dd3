"""PyLate checkpoint prefixes: absent or ``null`` is PyLate's ``"[Q] "`` / ``"[D] "``, an empty
string is no prefix token at all (``pylate/models/colbert.py``: ``use_prefix = prefix_id is not
None``). Token ids and vectors against a direct torch computation of PyLate's semantics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import colbert_checkpoints as ck
import pytest
import tiny_models
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from vllm_pool.engine.colbert_checkpoint import read_colbert_checkpoint
from vllm_pool.retrievers import ColBERTEncoder

from vllm_pool import LLM

QUERIES = ["what is the capital of france", "hello world", "the cat and the dog " * 6]  # the last is cut
DOCS = ["paris is the capital city of france, and a city on a river.", "star", "music and film " * 25]
DEFAULTS = {"query_prefix": "[Q] ", "document_prefix": "[D] "}
ABSENT = object()


def pylate_prefix(cfg: dict[str, Any], key: str) -> str | None:
    """PyLate's prefix: the config's value unless it is absent or ``None`` (then its default);
    ``""`` gives no prefix id (``None``)."""
    value = cfg.get(key)
    value = DEFAULTS[key] if value is None else value
    return value if value else None


def pylate_reference(
    folder: Path, texts: list[str], is_query: bool
) -> tuple[list[list[int]], list[torch.Tensor]]:
    """PyLate's ``ColBERT.tokenize`` and ``encode`` on ``folder``: the token ids (without the
    padding of documents) and the vectors (skiplist tokens dropped from documents)."""
    from transformers import AutoTokenizer, BertModel

    cfg = json.loads((folder / "config_sentence_transformers.json").read_text())
    tok = AutoTokenizer.from_pretrained(folder)
    bert = BertModel.from_pretrained(folder).eval()
    dense = load_file(str(folder / "1_Dense" / "model.safetensors"))["linear.weight"]
    prefix = pylate_prefix(cfg, "query_prefix" if is_query else "document_prefix")
    prefix_id = tok.convert_tokens_to_ids(prefix) if prefix else None
    length = cfg["query_length"] if is_query else cfg["document_length"]
    max_length = length - 1 if prefix_id is not None else length
    tok.pad_token = tok.mask_token  # PyLate pads queries with [MASK]
    padding = "max_length" if is_query else "longest"
    enc = tok(texts, padding=padding, truncation=True, max_length=max_length, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if prefix_id is not None:

        def insert(t: torch.Tensor, value: int) -> torch.Tensor:
            column = torch.full((t.shape[0], 1), value, dtype=t.dtype)
            return torch.cat([t[:, :1], column, t[:, 1:]], dim=1)

        ids, mask = insert(ids, prefix_id), insert(mask, 1)
    if is_query and cfg["attend_to_expansion_tokens"]:
        mask = torch.ones_like(mask)
    with torch.no_grad():
        vecs = F.normalize(bert(input_ids=ids, attention_mask=mask).last_hidden_state @ dense.T, dim=-1)
    skip = set(tok.convert_tokens_to_ids(cfg["skiplist_words"]))
    out_ids, out_vecs = [], []
    for row_ids, row_mask, row in zip(ids.tolist(), mask.tolist(), vecs):
        real = [is_query or m == 1 for m in row_mask]
        out_ids.append([t for t, r in zip(row_ids, real) if r])
        keep = [r and (is_query or t not in skip) for t, r in zip(row_ids, real)]
        out_vecs.append(row[torch.tensor(keep)])
    return out_ids, out_vecs


@pytest.mark.parametrize(
    "query_prefix", [ABSENT, None, "", "[unused0]"], ids=["absent", "null", "empty", "set"]
)
@pytest.mark.parametrize("document_prefix", [ABSENT, None, ""], ids=["absent", "null", "empty"])
def test_prefix_settings_follow_pylate(tmp_path, query_prefix, document_prefix):
    cfg: dict[str, Any] = {"query_length": 24, "document_length": 60}
    for key, value in (("query_prefix", query_prefix), ("document_prefix", document_prefix)):
        if value is not ABSENT:
            cfg[key] = value
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps(cfg))
    (tmp_path / "modules.json").write_text("[]")
    settings = read_colbert_checkpoint(tmp_path, tmp_path, ["BertModel"]).settings
    assert settings["query_marker"] == pylate_prefix(cfg, "query_prefix")
    assert settings["doc_marker"] == pylate_prefix(cfg, "document_prefix")


def _without_prefix_tokens(folder: Path) -> Path:
    """Give ``folder`` the plain BERT tokenizer: no ``[Q] `` / ``[D] `` in its vocabulary."""
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
        (folder / name).unlink(missing_ok=True)
    tiny_models.save_bert_tokenizer(folder)
    return folder


@pytest.mark.parametrize(
    ("prefixes", "plain_tokenizer"),
    [
        ({"query_prefix": "", "document_prefix": ""}, False),
        ({"query_prefix": "[Q] ", "document_prefix": ""}, False),
        ({"query_prefix": "", "document_prefix": ""}, True),  # PyLate adds no token it does not use
    ],
)
def test_empty_prefix_means_no_prefix_token(tmp_path, prefixes, plain_tokenizer):
    folder = ck.save_pylate(tmp_path / "pylate", **prefixes)
    if plain_tokenizer:
        _without_prefix_tokens(folder)
    enc = ColBERTEncoder.from_llm(LLM(str(folder)))
    cfg = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert enc.config.query_marker == pylate_prefix(cfg, "query_prefix")
    assert enc.config.doc_marker is None
    want_ids, want_vecs = pylate_reference(folder, QUERIES, True)
    assert enc.query_token_ids(QUERIES) == want_ids
    assert ck.min_cosine(enc.encode_queries(QUERIES), want_vecs) >= 0.9999
    want_ids, want_vecs = pylate_reference(folder, DOCS, False)
    assert enc.document_token_ids(DOCS) == want_ids
    assert ck.min_cosine(enc.encode_documents(DOCS), want_vecs) >= 0.9999
