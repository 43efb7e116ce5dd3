"""token_classify / reward on a BertForSequenceClassification and a ModernBERT classifier:
the classifier alone on each token's hidden state (vLLM's ``for_token_classify(classifier=
self.classifier)``); the BERT pooler (dense + tanh) and the ModernBERT head belong to
``classify`` / ``score`` only."""

from __future__ import annotations

import pytest
import tiny_models
import torch
from tiny_models import TEXTS
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from vllm_pool import LLM, PoolingParams


@pytest.fixture(scope="module")
def bert3(tiny_bert_cls3):
    return tiny_bert_cls3


@pytest.fixture(scope="module")
def reference(bert3):
    tok = AutoTokenizer.from_pretrained(bert3)
    model = AutoModelForSequenceClassification.from_pretrained(bert3).eval()

    def per_token(text: str) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """Token ids, per-token classifier logits, and the sequence logits (the model's own)."""
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            hidden = model.bert(**enc).last_hidden_state[0]
            return enc["input_ids"][0].tolist(), model.classifier(hidden), model(**enc).logits[0]

    return per_token


def test_reward_is_the_classifier_on_each_token(bert3, reference) -> None:
    llm = LLM(str(bert3))
    outs = llm.reward(TEXTS, use_tqdm=False)
    raw = llm.encode(
        TEXTS, PoolingParams(use_activation=False), pooling_task="token_classify", use_tqdm=False
    )
    for text, o, r in zip(TEXTS, outs, raw):
        ids, logits, _ = reference(text)
        assert o.prompt_token_ids == ids
        torch.testing.assert_close(r.outputs.data, logits, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(o.outputs.data, logits.softmax(-1), rtol=1e-4, atol=1e-6)


def test_classify_keeps_the_bert_pooler(bert3, reference) -> None:
    llm = LLM(str(bert3))
    for text, o in zip(TEXTS, llm.classify(TEXTS, use_tqdm=False)):
        _, _, seq_logits = reference(text)
        torch.testing.assert_close(
            torch.tensor(o.outputs.probs), seq_logits.softmax(-1), rtol=1e-4, atol=1e-6
        )


def test_step_pooling_with_returned_token_ids(bert3, reference) -> None:
    """STEP: the rows of the step tag, the chosen label columns, then the softmax over them."""
    text = "a b a c a"
    ids, logits, _ = reference(text)
    tag = ids[1]
    llm = LLM(str(bert3), pooler_config={"pooling_type": "STEP", "step_tag_id": tag})
    rows = [i for i, t in enumerate(ids) if t == tag]
    assert len(rows) == 3
    (o,) = llm.reward(text, PoolingParams(returned_token_ids=[2, 0]), use_tqdm=False)
    torch.testing.assert_close(o.outputs.data, logits[rows][:, [2, 0]].softmax(-1), rtol=1e-4, atol=1e-6)


def test_modernbert_token_classify_is_the_classifier_alone(tiny_dir) -> None:
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    folder = tiny_dir / "modernbert_cls3_token_heads"
    tok = tiny_models.save_bert_tokenizer(folder)
    config = ModernBertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=128, num_labels=3,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
        cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = ModernBertForSequenceClassification(config).eval()
    model.save_pretrained(folder)
    llm = LLM(str(folder))
    raw = llm.encode(
        TEXTS, PoolingParams(use_activation=False), pooling_task="token_classify", use_tqdm=False
    )
    for text, r, c in zip(TEXTS, raw, llm.classify(TEXTS, use_tqdm=False)):
        enc = AutoTokenizer.from_pretrained(folder)(text, return_tensors="pt")
        with torch.no_grad():
            hidden = model.model(**enc).last_hidden_state[0]
            expected, seq = model.classifier(hidden), model(**enc).logits[0]
        torch.testing.assert_close(r.outputs.data, expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.tensor(c.outputs.probs), seq.softmax(-1), rtol=1e-4, atol=1e-6)
