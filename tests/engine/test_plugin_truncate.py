"""``encode(..., pooling_task="plugin", truncate_prompt_tokens=N)`` cuts the plugin's prompts."""

from __future__ import annotations

import pytest
import tiny_models
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from vllm_pool import LLM

LONG = "the cat and a song " * 60  # over the tiny model's 128 tokens


@pytest.fixture(scope="module")
def labelled(tiny_dir):
    folder = tiny_dir / "bert_labels_truncate"
    if not (folder / "config.json").exists():
        tiny_models.bert(
            folder, cls="BertForSequenceClassification", num_labels=4,
            id2label={0: "sports", 1: "music", 2: "science", 3: "food"},
            label2id={"sports": 0, "music": 1, "science": 2, "food": 3},
        )  # fmt: skip
    return folder


@pytest.mark.parametrize("n", [5, 9])
def test_plugin_honours_truncate_prompt_tokens(labelled, n) -> None:
    llm = LLM(str(labelled), io_processor_plugin="topk_labels")
    tok = AutoTokenizer.from_pretrained(labelled)
    model = AutoModelForSequenceClassification.from_pretrained(labelled).eval()
    enc = tok(LONG, truncation=True, max_length=n, return_tensors="pt")
    with torch.no_grad():
        probs = model(**enc).logits[0].softmax(-1)
    best = probs.topk(2)
    (out,) = llm.encode(
        {"texts": [LONG], "k": 2}, pooling_task="plugin", truncate_prompt_tokens=n, use_tqdm=False
    )
    assert out.prompt_token_ids == enc["input_ids"][0].tolist()
    assert [r["label"] for r in out.outputs] == [model.config.id2label[int(i)] for i in best.indices]
    assert [r["score"] for r in out.outputs] == pytest.approx(best.values.tolist(), abs=1e-5)


def test_plugin_without_truncation_refuses_the_long_text(labelled) -> None:
    llm = LLM(str(labelled), io_processor_plugin="topk_labels")
    with pytest.raises(ValueError, match=r"maximum model length of 128.*prompts\[0\]"):
        llm.encode({"texts": [LONG]}, pooling_task="plugin", use_tqdm=False)
