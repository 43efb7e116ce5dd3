"""IO processor plugins through the entry point group, and the shipped ``topk_labels``."""

from __future__ import annotations

import pytest
import tiny_models


@pytest.fixture(scope="module")
def labelled(tiny_dir):
    return tiny_models.bert(
        tiny_dir / "bert_labels", cls="BertForSequenceClassification", num_labels=4,
        id2label={0: "sports", 1: "music", 2: "science", 3: "food"},
        label2id={"sports": 0, "music": 1, "science": 2, "food": 3},
    )  # fmt: skip


def test_registered_plugin_returns_named_top_k(labelled):
    from vllm_pool.engine.plugins import available_plugins

    from vllm_pool import LLM

    assert "topk_labels" in available_plugins()
    llm = LLM(str(labelled), io_processor_plugin="topk_labels")
    assert "plugin" in llm.get_supported_tasks()
    texts = ["hello world", "a song and music"]
    outs = llm.encode({"texts": texts, "k": 2}, pooling_task="plugin", use_tqdm=False)
    probs = [o.outputs.probs for o in llm.classify(texts, use_tqdm=False)]
    names = ["sports", "music", "science", "food"]
    for out, p in zip(outs, probs):
        best = sorted(range(4), key=lambda i: -p[i])[:2]
        assert [r["label"] for r in out.outputs] == [names[i] for i in best]
        assert [r["score"] for r in out.outputs] == pytest.approx([p[i] for i in best], abs=1e-6)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        llm.encode({"texts": texts, "k": 0}, pooling_task="plugin", use_tqdm=False)


def test_unknown_plugin_and_no_plugin(labelled):
    from vllm_pool import LLM, UnsupportedTaskError

    with pytest.raises(
        ValueError, match=r"Unknown IO processor plugin 'nope'; registered plugins: \[.*'topk_labels'"
    ):
        LLM(str(labelled), io_processor_plugin="nope")
    with pytest.raises(UnsupportedTaskError, match="does not support the 'plugin' task"):
        LLM(str(labelled)).encode("x", pooling_task="plugin", use_tqdm=False)


def test_plugin_needs_its_task(default_model_dir):
    from vllm_pool import LLM

    with pytest.raises(ValueError, match="needs the 'classify' task"):
        LLM(str(default_model_dir), io_processor_plugin="topk_labels")
