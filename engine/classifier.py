"""Classification heads taken from a loaded Hugging Face task model.

The runner only computes hidden states; the head that a ``*ForSequenceClassification``
(or ``*ForTokenClassification``, or an LM head) would apply on top is split off here as a
function ``[N, hidden] -> [N, num_labels]``, with the pooling method it expects.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from vllm_pool.engine.types import PoolingType

logger = logging.getLogger(__name__)


@dataclass
class Classifier:
    """A classification head: ``fn([N, hidden]) -> [N, num_labels]`` after ``method`` pooling.

    ``token_fn`` is the head of the token-level tasks (``token_classify``, ``reward``) when
    it differs from ``fn``: a BERT model's pooler (dense + tanh) and a ModernBERT model's head
    (dense + GELU + LayerNorm) belong to the sequence (``classify`` / ``score``) pooling only,
    so vLLM applies the classifier alone to each token.
    """

    fn: Callable[[torch.Tensor], torch.Tensor]
    method: PoolingType
    num_labels: int
    token_fn: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def per_token(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The head applied to each token's hidden state."""
        return self.fn if self.token_fn is None else self.token_fn


def _linear(module: Any) -> bool:
    return isinstance(module, torch.nn.Linear)


def fp32(module: Any, model: Any, folder: Path | None) -> Any:
    """``module`` (a part of ``model``) in float32. Heads run in fp32 on fp32 inputs whatever
    the backbone's dtype, as vLLM's pooling heads (``head_dtype``); when the model was loaded
    in another dtype, the copy's weights are read again from the checkpoint in ``folder`` (an
    upcast of bf16 weights is not the checkpoint's head)."""
    if all(p.dtype == torch.float32 for p in module.parameters()):
        return module
    head = copy.deepcopy(module).float()
    prefix = next((name for name, m in model.named_modules() if m is module), "")
    names = {f"{prefix}.{n}" if prefix else n: p for n, p in head.named_parameters()}
    found = checkpoint_tensors(folder, list(names)) if folder is not None else {}
    with torch.no_grad():
        for name, tensor in found.items():
            if tensor.shape == names[name].shape:
                names[name].copy_(tensor)
    return head


def checkpoint_tensors(folder: Path, suffixes: list[str]) -> dict[str, torch.Tensor]:
    """``{suffix: tensor}`` for the tensors whose names end with ``suffix`` in the folder's
    safetensors files (the first match of each; missing ones left out)."""
    from safetensors import safe_open

    found: dict[str, torch.Tensor] = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                for suffix in suffixes:
                    if suffix not in found and (name == suffix or name.endswith("." + suffix)):
                        found[suffix] = f.get_tensor(name)
    return found


def _lm_head_classifier(
    model: Any, hf_config: Any, tokenizer: Any, folder: Path | None = None, step: bool = False
) -> Classifier:
    """A score head for a causal LM converted with ``convert="classify"`` (vLLM's
    ``as_seq_cls_model``).

    With ``classifier_from_token`` (token strings) in the config, the head keeps those rows of
    the LM head; with ``method == "from_2_way_softmax"`` (or Qwen3-reranker's
    ``is_original_qwen3_reranker``) two tokens ``[no, yes]`` become one logit ``yes - no``,
    whose sigmoid equals the two-way softmax. Otherwise the checkpoint's ``score.weight``
    (``[num_labels, hidden]``) is the head; a STEP-pooled process reward model
    (``returned_token_ids`` columns of the LM head) keeps the LM head. Anything else is an
    error: a softmax over the whole vocabulary is not a classifier.
    """
    weight = model.get_output_embeddings().weight  # [vocab, hidden]
    tokens = getattr(hf_config, "classifier_from_token", None)
    if not tokens:
        score = (
            checkpoint_tensors(folder, ["score.weight"]).get("score.weight") if folder is not None else None
        )
        if score is not None:
            n = int(getattr(hf_config, "num_labels", score.shape[0]))
            if score.ndim != 2 or score.shape != (n, weight.shape[1]):
                raise ValueError(
                    f"score.weight has shape {list(score.shape)}; expected [num_labels={n}, "
                    f"hidden_size={weight.shape[1]}]"
                )
            w = score.to(weight.device, torch.float32)
            return Classifier(lambda x: x @ w.T, PoolingType.LAST, n)
        if step:
            # the whole vocabulary head stays in the model's dtype (too large to copy)
            return Classifier(lambda x: x.to(weight.dtype) @ weight.T, PoolingType.LAST, int(weight.shape[0]))
        archs = list(getattr(hf_config, "architectures", None) or [])
        raise ValueError(
            f"convert='classify' on {archs or 'this causal LM'} needs a classification head: the "
            "checkpoint has no 'score.weight' and the config no 'classifier_from_token' (set it with "
            "hf_overrides, e.g. {'classifier_from_token': ['no', 'yes'], 'method': 'from_2_way_softmax'})"
        )
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError(f"classifier_from_token {tokens} are not all in the tokenizer's vocabulary")
    rows = weight[ids].float()  # [n, hidden]
    method = getattr(hf_config, "method", None)
    if method == "from_2_way_softmax" or getattr(hf_config, "is_original_qwen3_reranker", False):
        if len(ids) != 2:
            raise ValueError("from_2_way_softmax needs exactly two classifier_from_token entries")
        w = (rows[1] - rows[0]).unsqueeze(0)  # [1, hidden]
        return Classifier(lambda x: x @ w.T, PoolingType.LAST, 1)
    return Classifier(lambda x: x @ rows.T, PoolingType.LAST, len(ids))


def sequence_classifier(
    model: Any, hf_config: Any, tokenizer: Any = None, folder: Path | None = None, step: bool = False
) -> Classifier:
    """Split the sequence-classification head off ``model`` (a transformers task model).

    ``folder`` (the checkpoint) and ``step`` (STEP pooling configured) matter only for a
    causal LM converted with ``convert="classify"``: see :func:`_lm_head_classifier`.
    """
    if getattr(model, "lm_head", None) is not None:  # a causal LM converted with convert="classify"
        return _lm_head_classifier(model, hf_config, tokenizer, folder, step)
    n = int(getattr(hf_config, "num_labels", 2))
    score = getattr(model, "score", None)
    if _linear(score):  # decoders: Qwen2/Llama/...ForSequenceClassification
        return Classifier(fp32(score, model, folder), PoolingType.LAST, n)
    classifier = getattr(model, "classifier", None)
    if classifier is None:
        raise ValueError(f"Cannot find the classification head of {type(model).__name__}")
    classifier = fp32(classifier, model, folder)
    base = model.base_model
    pooler = getattr(base, "pooler", None) or getattr(model, "pooler", None)
    if getattr(model, "head", None) is not None:  # ModernBERT: head, then classifier
        head = fp32(model.head, model, folder)
        method = (
            PoolingType.MEAN if getattr(hf_config, "classifier_pooling", "cls") == "mean" else PoolingType.CLS
        )
        return Classifier(lambda x: classifier(head(x)), method, n, token_fn=classifier)
    if getattr(model, "pre_classifier", None) is not None:  # DistilBERT
        pre = fp32(model.pre_classifier, model, folder)
        return Classifier(lambda x: classifier(torch.relu(pre(x))), PoolingType.CLS, n)
    if _linear(classifier) and pooler is not None:  # BERT-like: pooler (dense + tanh) on CLS
        pooler = fp32(pooler, model, folder)
        return Classifier(
            lambda x: classifier(pooler(x.unsqueeze(1))), PoolingType.CLS, n, token_fn=classifier
        )
    if _linear(classifier):
        return Classifier(classifier, PoolingType.CLS, n)
    # RoBERTa / XLM-R / Electra heads read features[:, 0, :]
    return Classifier(lambda x: classifier(x.unsqueeze(1)), PoolingType.CLS, n)


def token_classifier(model: Any, hf_config: Any, folder: Path | None = None) -> Classifier:
    """The per-token head of a ``*ForTokenClassification`` model (``folder``: the checkpoint)."""
    n = int(getattr(hf_config, "num_labels", 2))
    for name in ("classifier", "score"):
        module = getattr(model, name, None)
        if _linear(module):
            return Classifier(fp32(module, model, folder), PoolingType.ALL, n)
    raise ValueError(f"Cannot find the token-classification head of {type(model).__name__}")
