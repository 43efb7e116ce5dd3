"""Classification heads taken from a loaded Hugging Face task model.

The runner only computes hidden states; the head that a ``*ForSequenceClassification``
(or ``*ForTokenClassification``, or an LM head) would apply on top is split off here as a
function ``[N, hidden] -> [N, num_labels]``, with the pooling method it expects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from vllm_pool.engine.types import PoolingType

logger = logging.getLogger(__name__)


@dataclass
class Classifier:
    """A classification head: ``fn([N, hidden]) -> [N, num_labels]`` after ``method`` pooling."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    method: PoolingType
    num_labels: int


def _linear(module: Any) -> bool:
    return isinstance(module, torch.nn.Linear)


def _lm_head_classifier(model: Any, hf_config: Any, tokenizer: Any) -> Classifier:
    """A score head from a causal LM's output embeddings (vLLM's seq-cls adapter).

    With ``classifier_from_token`` (token strings) in the config, the head keeps those rows of
    the LM head; with ``method == "from_2_way_softmax"`` (or Qwen3-reranker's
    ``is_original_qwen3_reranker``) two tokens ``[no, yes]`` become one logit ``yes - no``,
    whose sigmoid equals the two-way softmax. Without it, the full vocabulary logits.
    """
    weight = model.get_output_embeddings().weight  # [vocab, hidden]
    tokens = getattr(hf_config, "classifier_from_token", None)
    if not tokens:
        return Classifier(lambda x: x @ weight.T, PoolingType.LAST, int(weight.shape[0]))
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError(f"classifier_from_token {tokens} are not all in the tokenizer's vocabulary")
    rows = weight[ids]  # [n, hidden]
    method = getattr(hf_config, "method", None)
    if method == "from_2_way_softmax" or getattr(hf_config, "is_original_qwen3_reranker", False):
        if len(ids) != 2:
            raise ValueError("from_2_way_softmax needs exactly two classifier_from_token entries")
        w = (rows[1] - rows[0]).unsqueeze(0)  # [1, hidden]
        return Classifier(lambda x: x @ w.T, PoolingType.LAST, 1)
    return Classifier(lambda x: x @ rows.T, PoolingType.LAST, len(ids))


def sequence_classifier(model: Any, hf_config: Any, tokenizer: Any = None) -> Classifier:
    """Split the sequence-classification head off ``model`` (a transformers task model)."""
    if getattr(model, "lm_head", None) is not None:  # a causal LM converted with convert="classify"
        return _lm_head_classifier(model, hf_config, tokenizer)
    n = int(getattr(hf_config, "num_labels", 2))
    score = getattr(model, "score", None)
    if _linear(score):  # decoders: Qwen2/Llama/...ForSequenceClassification
        return Classifier(score, PoolingType.LAST, n)
    classifier = getattr(model, "classifier", None)
    if classifier is None:
        raise ValueError(f"Cannot find the classification head of {type(model).__name__}")
    base = model.base_model
    pooler = getattr(base, "pooler", None) or getattr(model, "pooler", None)
    if getattr(model, "head", None) is not None:  # ModernBERT: head, then classifier
        head = model.head
        method = (
            PoolingType.MEAN if getattr(hf_config, "classifier_pooling", "cls") == "mean" else PoolingType.CLS
        )
        return Classifier(lambda x: classifier(head(x)), method, n)
    if getattr(model, "pre_classifier", None) is not None:  # DistilBERT
        pre = model.pre_classifier
        return Classifier(lambda x: classifier(torch.relu(pre(x))), PoolingType.CLS, n)
    if _linear(classifier) and pooler is not None:  # BERT-like: pooler (dense + tanh) on CLS
        return Classifier(lambda x: classifier(pooler(x.unsqueeze(1))), PoolingType.CLS, n)
    if _linear(classifier):
        return Classifier(classifier, PoolingType.CLS, n)
    # RoBERTa / XLM-R / Electra heads read features[:, 0, :]
    return Classifier(lambda x: classifier(x.unsqueeze(1)), PoolingType.CLS, n)


def token_classifier(model: Any, hf_config: Any) -> Classifier:
    """The per-token head of a ``*ForTokenClassification`` model."""
    n = int(getattr(hf_config, "num_labels", 2))
    for name in ("classifier", "score"):
        module = getattr(model, name, None)
        if _linear(module):
            return Classifier(module, PoolingType.ALL, n)
    raise ValueError(f"Cannot find the token-classification head of {type(model).__name__}")
