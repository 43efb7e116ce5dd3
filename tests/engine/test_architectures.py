"""The architecture registry: a new architecture is one entry; the generic entries by name."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from tiny_models import TEXTS
from vllm_pool.engine import architectures
from vllm_pool.engine.architectures import Architecture, register, resolve
from vllm_pool.engine.heads import EmbeddingHead
from vllm_pool.engine.pooler import Pooler
from vllm_pool.engine.types import PoolingType


def _mean_of_masked_lm(cfg, model, tokenizer):
    head = EmbeddingHead(model_name=cfg.name, hidden_size=cfg.hidden_size, normalize_default=False)
    return {"embed": Pooler("embed", PoolingType.MEAN, head)}


@pytest.fixture
def registered():
    entry = Architecture(
        "TinyMeanOfMaskedLM", "AutoModelForMaskedLM", _mean_of_masked_lm, backbone=lambda m: m.base_model
    )
    register(entry)
    yield entry
    del architectures.ARCHITECTURES["TinyMeanOfMaskedLM"]


def test_a_new_architecture_is_one_entry(registered, tiny_bert):
    """The entry picks the class that loads the checkpoint, the backbone the runner runs and
    the poolers; the outputs match a direct mean over transformers' hidden states."""
    from transformers import AutoModel, AutoTokenizer

    from vllm_pool import LLM

    llm = LLM(str(tiny_bert), hf_overrides={"architectures": ["TinyMeanOfMaskedLM"]})
    assert llm.get_supported_tasks() == ("embed",)
    assert type(llm.runner.model).__name__ == "BertModel"  # the masked LM's backbone
    ours = torch.tensor([o.outputs.embedding for o in llm.embed(TEXTS, use_tqdm=False)])

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    ref_model = AutoModel.from_pretrained(tiny_bert).eval()
    with torch.inference_mode():
        enc = tok(TEXTS, padding=True, truncation=True, max_length=llm.model_config.max_model_len,
                  return_tensors="pt")  # fmt: skip
        hidden = ref_model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        ref = (hidden * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def _cfg(archs, convert, **hf):
    return SimpleNamespace(architectures=archs, convert=convert, hf_config=SimpleNamespace(**hf))


@pytest.mark.parametrize(
    ("archs", "convert", "hf", "expected"),
    [
        (["BertModel"], "embed", {}, "embed"),
        (["Qwen2ForCausalLM"], "embed", {}, "embed"),
        (["BertForSequenceClassification"], "classify", {}, "sequence-classify"),
        (["BertForTokenClassification"], "classify", {}, "token-classify"),
        (["Qwen2ForCausalLM"], "classify", {}, "lm-classify"),
        (["Qwen3ForSequenceClassification"], "classify", {"classifier_from_token": ["y"]}, "lm-classify"),
        (["BgeM3EmbeddingModel"], "embed", {}, "BgeM3EmbeddingModel"),
    ],
)
def test_generic_and_registered_entries(archs, convert, hf, expected):
    assert resolve(_cfg(archs, convert, **hf)).name == expected
