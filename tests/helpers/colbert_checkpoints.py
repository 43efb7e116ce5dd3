"""ColBERT checkpoints in the layouts of colbert-ai (``HF_ColBERT``) and PyLate, and the
reference computations of their query / document vectors, written from their semantics
with transformers and torch only (neither library is installed here).
"""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path
from typing import Any

import tiny_models
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


def save_hf_colbert(folder: Path, base: Path, dim: int, metadata: dict[str, Any], seed: int = 5) -> Path:
    """An ``HF_ColBERT`` folder from the BERT at ``base``: ``bert.*`` weights and an orthonormal
    ``linear`` ``[dim, hidden]`` in one safetensors file, plus ``artifact.metadata``."""
    from transformers import AutoTokenizer, BertModel

    model = BertModel.from_pretrained(base)
    hidden = model.config.hidden_size
    torch.manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(hidden, dim))  # [hidden, dim], orthonormal columns
    state = {f"bert.{k}": v.contiguous() for k, v in model.state_dict().items()}
    state["linear.weight"] = q.T.contiguous()
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config["architectures"] = ["HF_ColBERT"]
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    meta = {"dim": dim, "similarity": "cosine", **metadata}
    (folder / "artifact.metadata").write_text(json.dumps(meta), encoding="utf-8")
    return folder


def colbert_ai_vectors(folder: Path, texts: list[str], is_query: bool) -> list[torch.Tensor]:
    """colbert-ai's ``ColBERT.query`` / ``ColBERT.doc`` (``keep_dims='return_mask'``) on ``folder``."""
    from transformers import AutoTokenizer, BertModel

    meta = json.loads((folder / "artifact.metadata").read_text())
    tok = AutoTokenizer.from_pretrained(folder)
    bert = BertModel.from_pretrained(folder).eval()
    linear = load_file(str(folder / "model.safetensors"))["linear.weight"]
    marker = tok.convert_tokens_to_ids(meta["query_token_id" if is_query else "doc_token_id"])
    texts = [". " + t for t in texts]
    if is_query:
        enc = tok(texts, padding="max_length", truncation=True, max_length=meta["query_maxlen"])
    else:
        enc = tok(texts, padding="longest", truncation="longest_first", max_length=meta["doc_maxlen"])
    enc = {k: torch.tensor(v) for k, v in enc.items()}
    ids, mask = enc["input_ids"], enc["attention_mask"]
    ids[:, 1] = marker
    if is_query:
        ids[ids == tok.pad_token_id] = tok.mask_token_id
        if meta.get("attend_to_mask_tokens"):
            mask[ids == tok.mask_token_id] = 1
    with torch.no_grad():
        vecs = F.normalize(bert(input_ids=ids, attention_mask=mask).last_hidden_state @ linear.T, dim=-1)
    skip = {tok.encode(s, add_special_tokens=False)[0] for s in string.punctuation}
    out = []
    for row_ids, row in zip(ids.tolist(), vecs):
        if is_query:
            keep = [t != tok.pad_token_id for t in row_ids]
        else:
            punct = skip if meta.get("mask_punctuation") else set()
            keep = [t != tok.pad_token_id and t not in punct for t in row_ids]
        out.append(row[torch.tensor(keep)])
    return out


def save_pylate(
    folder: Path, dense_out: int = 16, attend: bool = False, max_seq_length: int = 31, **config: Any
) -> Path:
    """A PyLate folder: a tiny BERT (tokenizer with ``[Q] `` / ``[D] `` added) + Dense, and
    ``config_sentence_transformers.json`` with PyLate's keys."""
    from transformers import AutoTokenizer, BertModel

    base = tiny_models.bert(folder.parent / (folder.name + "_base"))
    tok = AutoTokenizer.from_pretrained(base)
    tok.add_tokens(["[Q] ", "[D] "])
    model = BertModel.from_pretrained(base)
    model.resize_token_embeddings(len(tok))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    shutil.rmtree(base)
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False})
    )
    dense = folder / "1_Dense"
    dense.mkdir()
    (dense / "config.json").write_text(
        json.dumps(
            {
                "in_features": 32,
                "out_features": dense_out,
                "bias": False,
                "activation_function": "torch.nn.modules.linear.Identity",
            }
        )
    )
    torch.manual_seed(7)
    save_file({"linear.weight": torch.randn(dense_out, 32) / 6}, str(dense / "model.safetensors"))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    st_config = {
        "query_prefix": "[Q] ",
        "document_prefix": "[D] ",
        "query_length": 24,
        "document_length": 60,
        "attend_to_expansion_tokens": attend,
        "skiplist_words": list(string.punctuation),
        "similarity_fn_name": "MaxSim",
        **config,
    }
    (folder / "config_sentence_transformers.json").write_text(json.dumps(st_config))
    return folder


def pylate_vectors(folder: Path, texts: list[str], is_query: bool) -> list[torch.Tensor]:
    """PyLate's ``ColBERT.encode(is_query=...)`` semantics on ``folder``."""
    from transformers import AutoTokenizer, BertModel

    cfg = json.loads((folder / "config_sentence_transformers.json").read_text())
    tok = AutoTokenizer.from_pretrained(folder)
    bert = BertModel.from_pretrained(folder).eval()
    dense = load_file(str(folder / "1_Dense" / "model.safetensors"))["linear.weight"]
    length = cfg["query_length"] if is_query else cfg["document_length"]
    tok.pad_token = tok.mask_token  # PyLate pads queries with [MASK]
    padding = "max_length" if is_query else "longest"
    enc = tok(texts, padding=padding, truncation=True, max_length=length - 1, return_tensors="pt")
    prefix = tok.convert_tokens_to_ids(cfg["query_prefix" if is_query else "document_prefix"])

    def insert(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.cat([t[:, :1], torch.full((t.shape[0], 1), value, dtype=t.dtype), t[:, 1:]], dim=1)

    ids, mask = insert(enc["input_ids"], prefix), insert(enc["attention_mask"], 1)
    if is_query and cfg["attend_to_expansion_tokens"]:
        mask.fill_(1)
    with torch.no_grad():
        vecs = F.normalize(bert(input_ids=ids, attention_mask=mask).last_hidden_state @ dense.T, dim=-1)
    skip = set(tok.convert_tokens_to_ids(cfg["skiplist_words"]))
    out = []
    for row_ids, row_mask, row in zip(ids.tolist(), mask.tolist(), vecs):
        keep = [is_query or (m == 1 and t not in skip) for t, m in zip(row_ids, row_mask)]
        out.append(row[torch.tensor(keep)])
    return out


def save_bge_m3(folder: Path) -> Path:
    """A tiny BGE-M3 folder: XLM-RoBERTa plus ``sparse_linear.pt`` and ``colbert_linear.pt``."""
    tiny_models.xlm_roberta(folder)
    torch.manual_seed(3)
    torch.save(torch.nn.Linear(32, 1).state_dict(), folder / "sparse_linear.pt")
    torch.save(torch.nn.Linear(32, 24).state_dict(), folder / "colbert_linear.pt")
    return folder


def bge_m3_vectors(folder: Path, texts: list[str]) -> list[torch.Tensor]:
    """FlagEmbedding's BGE-M3 ColBERT vectors: ``colbert_linear`` on the hidden states after
    the first token, of the whole text, normalized."""
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    linear = torch.nn.Linear(32, 24)
    linear.load_state_dict(torch.load(folder / "colbert_linear.pt", weights_only=True))
    with torch.no_grad():
        hidden = [model(**tok(t, return_tensors="pt")).last_hidden_state[0] for t in texts]
        return [F.normalize(linear(h[1:]), dim=-1) for h in hidden]


def min_cosine(got: list[Any], want: list[torch.Tensor]) -> float:
    """The smallest row cosine over matching ``[L, D]`` pairs (shapes must agree)."""
    worst = 1.0
    for g, w in zip(got, want, strict=True):
        g = torch.as_tensor(g, dtype=torch.float32)
        assert g.shape == w.shape, f"{tuple(g.shape)} vectors, reference {tuple(w.shape)}"
        worst = min(worst, F.cosine_similarity(g, w.float(), dim=-1).min().item())
    return worst
