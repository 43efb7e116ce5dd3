"""Decoder models: reward (per-token), STEP pooling for process rewards, LM-head score heads."""

from __future__ import annotations

import pytest
import tiny_models
import torch
from tiny_models import TEXTS


def _hf(folder, cls, text):
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = getattr(transformers, cls).from_pretrained(folder, dtype=torch.float32).eval()
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        return model, enc["input_ids"][0], model(**enc, output_hidden_states=True)


@pytest.fixture(scope="module")
def qwen_seq1(tiny_dir):
    return tiny_models.qwen2(tiny_dir / "qwen_seq1", cls="Qwen2ForSequenceClassification", num_labels=1)


def test_decoder_classifier_last_token_and_reward(qwen_seq1):
    from vllm_pool import LLM, PoolingParams

    llm = LLM(str(qwen_seq1))
    assert llm.get_supported_tasks() == ("classify", "score", "token_classify")
    for text in TEXTS[:4]:
        model, _, out = _hf(qwen_seq1, "AutoModelForSequenceClassification", text)
        (cls,) = llm.classify(text, use_tqdm=False)
        torch.testing.assert_close(
            torch.tensor(cls.outputs.probs), torch.sigmoid(out.logits[0]), rtol=1e-4, atol=1e-6
        )
        # reward: the score head on every token, raw with use_activation=False
        (rew,) = llm.reward(text, PoolingParams(use_activation=False), use_tqdm=False)
        per_token = model.score(out.hidden_states[-1][0])
        torch.testing.assert_close(rew.outputs.data, per_token, rtol=1e-4, atol=1e-5)


def test_step_pooling_process_reward(tiny_dir):
    """A causal LM as a process reward model: STEP positions, two label tokens, softmax."""
    from vllm_pool import LLM, PoolingParams

    folder = tiny_models.qwen2(tiny_dir / "qwen_prm")
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(folder)
    step_id = tok.convert_tokens_to_ids("?")
    plus, minus = tok.convert_tokens_to_ids(["a", "b"])
    llm = LLM(
        str(folder),
        convert="classify",
        pooler_config={"pooling_type": "STEP", "step_tag_id": step_id, "returned_token_ids": [plus, minus]},
    )
    text = "what is it? the cat? the dog?"
    (out,) = llm.reward(text, use_tqdm=False)
    _, ids, ref = _hf(folder, "AutoModelForCausalLM", text)
    logits = ref.logits[0][ids == step_id][:, [plus, minus]]
    assert out.outputs.data.shape == (3, 2)
    torch.testing.assert_close(out.outputs.data, logits.softmax(-1), rtol=1e-4, atol=1e-6)
    # a request can ask for other steps and columns
    (alt,) = llm.reward(
        text,
        PoolingParams(step_tag_id=tok.convert_tokens_to_ids("t"), returned_token_ids=[plus]),
        use_tqdm=False,
    )
    assert alt.outputs.data.shape[1] == 1


def test_causal_lm_two_way_softmax_reranker(tiny_dir):
    """``classifier_from_token`` + ``from_2_way_softmax``: score == softmax([no, yes])[yes]."""
    from vllm_pool import LLM

    folder = tiny_models.qwen2(tiny_dir / "qwen_rr")
    llm = LLM(
        str(folder),
        convert="classify",
        hf_overrides={
            "architectures": ["Qwen2ForSequenceClassification"],
            "classifier_from_token": ["n", "y"],
            "method": "from_2_way_softmax",
        },
    )
    assert "score" in llm.get_supported_tasks()
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(folder)
    no, yes = tok.convert_tokens_to_ids(["n", "y"])
    for text in TEXTS[:3]:
        (out,) = llm.classify(text, use_tqdm=False)
        _, _, ref = _hf(folder, "AutoModelForCausalLM", text)
        expected = ref.logits[0, -1, [no, yes]].softmax(-1)[1]
        assert out.outputs.probs[0] == pytest.approx(float(expected), abs=1e-5)


def test_causal_lm_convert_classify_without_a_head_is_an_error(tiny_dir):
    """Issue 14 item 4: no score weights and no classifier_from_token -> a clear error,
    not a softmax over the vocabulary."""
    from vllm_pool import LLM

    folder = tiny_models.qwen2(tiny_dir / "qwen_vocab")
    message = r"needs a classification head: .*no 'score.weight'.*classifier_from_token"
    with pytest.raises(ValueError, match=message):
        LLM(str(folder), convert="classify")


@pytest.mark.parametrize("num_labels", [1, 3])
def test_causal_lm_convert_classify_uses_the_checkpoint_score_head(tiny_dir, num_labels):
    """Issue 14 item 4: a *ForCausalLM checkpoint holding ``score.weight`` gets a ``score`` head of
    ``num_labels`` (vLLM's as_seq_cls_model); parity with transformers' Qwen2ForSequenceClassification."""
    import json

    from vllm_pool import LLM

    folder = tiny_models.qwen2(
        tiny_dir / f"qwen_causal_score{num_labels}",
        cls="Qwen2ForSequenceClassification",
        num_labels=num_labels,
    )
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["Qwen2ForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    llm = LLM(str(folder), convert="classify")
    tasks = ("classify", "score", "token_classify") if num_labels == 1 else ("classify", "token_classify")
    assert llm.get_supported_tasks() == tasks
    outs = llm.classify(TEXTS[:4], use_tqdm=False)
    for text, out in zip(TEXTS[:4], outs):
        _, _, ref = _hf(folder, "AutoModelForSequenceClassification", text)
        probs = torch.sigmoid(ref.logits[0]) if num_labels == 1 else ref.logits[0].softmax(-1)
        assert len(out.outputs.probs) == num_labels
        torch.testing.assert_close(torch.tensor(out.outputs.probs), probs, rtol=1e-4, atol=1e-6)
