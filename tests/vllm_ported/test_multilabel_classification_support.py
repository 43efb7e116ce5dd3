"""Ported from vLLM ``tests/models/language/pooling/test_multilabel_classification_support.py``,
with the supported tasks vLLM lists for such models (issue 14 item 9).

Adapted: Rami/multi-label-class-classification-on-github-issues -> tiny BERT classifiers
(``problem_type="multi_label_classification"`` and plain multi-class, three labels);
``vllm_runner`` / ``hf_runner`` -> ``LLM.classify`` and transformers'
``AutoModelForSequenceClassification`` on the same folder; fp32 (``dtype="float"``, vLLM's
tighter tolerance) instead of half. vLLM's task list for a sequence classifier is
``classify`` and ``token_classify``, plus ``score`` only when ``num_labels == 1``.
"""

from __future__ import annotations

import pytest
import tiny_models
import torch
from transformers import AutoModelForSequenceClassification

example_prompts = [
    "hello world",
    "what is the capital of france",
    "python code with a function and a class",
    "the cat and the dog",
]


@pytest.mark.parametrize(
    ("problem_type", "num_labels"),
    [("multi_label_classification", 3), ("single_label_classification", 3), (None, 1)],
)
@pytest.mark.parametrize("dtype", ["float"])
def test_classify_models(tiny_dir, problem_type, num_labels, dtype: str) -> None:
    from vllm_pool import LLM

    model = tiny_models.bert(
        tiny_dir / f"ported_multilabel_{problem_type}_{num_labels}",
        cls="BertForSequenceClassification",
        num_labels=num_labels,
        problem_type=problem_type,
    )
    llm = LLM(str(model), max_model_len=128, dtype="float32")
    expected = ("classify", "score", "token_classify") if num_labels == 1 else ("classify", "token_classify")
    assert llm.get_supported_tasks() == expected
    vllm_outputs = [o.outputs.probs for o in llm.classify(example_prompts, use_tqdm=False)]

    hf = AutoModelForSequenceClassification.from_pretrained(model).eval()
    tok = llm.get_tokenizer()
    hf_outputs = []
    with torch.no_grad():
        for prompt in example_prompts:
            logits = hf(**tok(prompt, return_tensors="pt")).logits[0]
            multi = problem_type == "multi_label_classification" or num_labels == 1
            hf_outputs.append(torch.sigmoid(logits) if multi else logits.softmax(-1))

    for hf_output, vllm_output in zip(hf_outputs, vllm_outputs):
        hf_output = torch.as_tensor(hf_output)
        vllm_output = torch.tensor(vllm_output)
        assert torch.allclose(hf_output, vllm_output, 1e-3 if dtype == "float" else 1e-2)
