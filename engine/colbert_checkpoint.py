"""ColBERT checkpoint formats, recognized from the model folder with no flags.

- colbert-ai ``HF_ColBERT``: BERT weights plus ``linear.weight`` (``[dim, hidden]``, no bias)
  in the same weights file, and ``artifact.metadata`` (JSON) with the encoder settings
  (``query_maxlen``, ``doc_maxlen``, ``query_token_id`` / ``doc_token_id`` markers,
  ``mask_punctuation``, ``attend_to_mask_tokens``, ``similarity``).
- PyLate (a Sentence Transformers folder: Transformer + Dense modules):
  ``config_sentence_transformers.json`` holds ``query_prefix``, ``document_prefix``,
  ``query_length``, ``document_length``, ``attend_to_expansion_tokens``, ``skiplist_words``
  and ``do_query_expansion``; a prefix that is absent or ``null`` is PyLate's ``"[Q] "`` /
  ``"[D] "``, an empty one means no prefix token (as in PyLate). Its
  ``sentence_bert_config.json`` ``max_seq_length`` is the last length PyLate tokenized with,
  not a model limit, so it never caps documents.
- BGE-M3 (``BgeM3EmbeddingModel``): ColBERT vectors from ``colbert_linear`` for the tokens
  after the first; no query expansion, no punctuation skipping.

A checkpoint gives the engine one thing, a projection head after the hidden states of
``token_embed`` (:attr:`ColbertCheckpoint.projection`), and gives the ColBERT encoder its
default settings (:attr:`ColbertCheckpoint.settings`, the field names of
``vllm_pool.retrievers.ColBERTConfig``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from vllm_pool.engine.st_config import DenseLayer

logger = logging.getLogger(__name__)

METADATA_FILE = "artifact.metadata"
HF_COLBERT = "HF_ColBERT"
_PYLATE_KEYS = (
    "query_prefix",
    "document_prefix",
    "query_length",
    "document_length",
    "attend_to_expansion_tokens",
    "skiplist_words",
    "do_query_expansion",
)


@dataclass(frozen=True)
class ColbertCheckpoint:
    """What a ColBERT checkpoint adds to a model.

    Attributes:
        format: ``"hf_colbert"``, ``"pylate"`` or ``"bge_m3"``.
        settings: default encoder settings (``ColBERTConfig`` field names).
        projection: the ``linear`` head of an ``HF_ColBERT`` checkpoint, applied to every
            token's hidden state by ``token_embed`` (PyLate's Dense modules come through the
            Sentence Transformers modules instead).
    """

    format: str
    settings: dict[str, Any] = field(default_factory=dict)
    projection: DenseLayer | None = None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the ColBERT settings in {path}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def _tensor_from_weights(folder: Path, key: str) -> torch.Tensor | None:
    """One tensor by name from the folder's safetensors (single or sharded) or .bin weights."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shard = _read_json(index).get("weight_map", {}).get(key)
        files = [folder / shard] if shard else []
    else:
        files = [folder / "model.safetensors"] if (folder / "model.safetensors").is_file() else []
    if files:
        from safetensors import safe_open

        with safe_open(str(files[0]), framework="pt") as f:
            return f.get_tensor(key) if key in f.keys() else None
    if (folder / "pytorch_model.bin").is_file():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        return state.get(key)
    return None


def _hf_colbert(hf_path: Path) -> ColbertCheckpoint:
    meta_file = hf_path / METADATA_FILE
    meta = _read_json(meta_file) if meta_file.is_file() else {}
    weight = _tensor_from_weights(hf_path, "linear.weight")
    if weight is None:
        raise ValueError(
            f"{hf_path} is a ColBERT (HF_ColBERT) checkpoint "
            "but its weights have no 'linear.weight' projection"
        )
    dim = meta.get("dim")
    if dim is not None and int(dim) != weight.shape[0]:
        raise ValueError(
            f"{meta_file}: dim={dim} but 'linear.weight' projects to {weight.shape[0]} dimensions"
        )
    similarity = meta.get("similarity", "cosine")
    if similarity != "cosine":
        logger.warning(
            "%s: similarity %r; vllm-pool scores ColBERT vectors by cosine MaxSim", hf_path, similarity
        )
    settings = {
        "query_maxlen": int(meta.get("query_maxlen", 32)),
        "doc_maxlen": int(meta.get("doc_maxlen", 220)),
        "query_marker": meta.get("query_token_id", "[unused0]"),
        "doc_marker": meta.get("doc_token_id", "[unused1]"),
        "mask_augment": True,
        "attend_to_expansion_tokens": bool(meta.get("attend_to_mask_tokens", False)),
        "skip_punctuation": bool(meta.get("mask_punctuation", True)),
    }
    projection = DenseLayer(weight=weight.float(), bias=None, activation="Identity")
    return ColbertCheckpoint("hf_colbert", settings, projection)


def _pylate_prefix(value: Any, default: str) -> str | None:
    """A PyLate prefix as a marker token: ``default`` when the key is absent or ``None`` (as
    PyLate), no marker for ``""`` (PyLate inserts no prefix token then)."""
    if value is None:
        return default
    return value if value != "" else None


def _pylate(cfg: dict[str, Any]) -> ColbertCheckpoint:
    settings: dict[str, Any] = {
        "query_maxlen": int(cfg.get("query_length") or 32),
        "doc_maxlen": int(cfg.get("document_length") or 180),
        "query_marker": _pylate_prefix(cfg.get("query_prefix"), "[Q] "),
        "doc_marker": _pylate_prefix(cfg.get("document_prefix"), "[D] "),
        "mask_augment": bool(cfg.get("do_query_expansion", True)),
        "attend_to_expansion_tokens": bool(cfg.get("attend_to_expansion_tokens") or False),
        "skip_punctuation": True,
    }
    if cfg.get("skiplist_words") is not None:
        settings["skiplist_words"] = tuple(str(w) for w in cfg["skiplist_words"])
    return ColbertCheckpoint("pylate", settings)


def read_colbert_checkpoint(path: Path, hf_path: Path, architectures: list[str]) -> ColbertCheckpoint | None:
    """The ColBERT format of a model folder, or ``None`` for any other model.

    Args:
        path: the model folder (a Sentence Transformers folder for PyLate).
        hf_path: the folder of the Hugging Face model inside it (``path`` itself unless the
            Sentence Transformers Transformer module lives in a subfolder).
        architectures: the architectures of ``config.json`` (after ``hf_overrides``).

    Raises:
        ValueError: a ColBERT checkpoint whose files are inconsistent or unreadable.
    """
    if "BgeM3EmbeddingModel" in architectures:
        return ColbertCheckpoint("bge_m3", {"mask_augment": False, "skip_punctuation": False})
    if HF_COLBERT in architectures or (hf_path / METADATA_FILE).is_file():
        return _hf_colbert(hf_path)
    st_file = path / "config_sentence_transformers.json"
    if st_file.is_file() and (path / "modules.json").is_file():
        cfg = _read_json(st_file)
        if any(key in cfg for key in _PYLATE_KEYS):
            return _pylate(cfg)
    return None
