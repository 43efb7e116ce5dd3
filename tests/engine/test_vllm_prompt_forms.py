"""vLLM's prompt forms and keywords: token-id lists as prompts, prompt dicts in ``score``,
``lora_request`` / ``tokenization_kwargs``, and ``==`` on pooled outputs."""

from __future__ import annotations

import numpy as np
import pytest
import tiny_models
import torch


def test_token_id_lists_are_prompts(default_llm):
    """vLLM's ``PromptType`` includes ``list[int]``: one list is one prompt, a list of lists a batch."""
    ids = default_llm.get_tokenizer()("hello world")["input_ids"]
    (ref,) = default_llm.embed({"prompt_token_ids": ids}, use_tqdm=False)
    (one,) = default_llm.embed(ids, use_tqdm=False)
    assert one.prompt_token_ids == ids
    np.testing.assert_allclose(one.outputs.embedding, ref.outputs.embedding, atol=1e-6)
    two = default_llm.embed([ids, "hello world", tuple(ids)], use_tqdm=False)
    assert [o.prompt_token_ids for o in two] == [ids, ids, ids]
    for o in two:
        np.testing.assert_allclose(o.outputs.embedding, ref.outputs.embedding, atol=1e-5)
    with pytest.raises(TypeError, match=r"prompts\[0\]\['prompt_token_ids'\] must be a list of integers"):
        default_llm.embed([101, "x"], use_tqdm=False)
    with pytest.raises(TypeError, match=r"prompts\[1\] must be a string, a list of token ids"):
        default_llm.embed(["a", 3.5], use_tqdm=False)


def test_score_takes_prompt_dicts(tiny_dir):
    """vLLM's ``LLM.score``: a ``{"prompt": ...}`` dict is its text and a
    ``{"prompt_token_ids": [...]}`` dict its decoded text (cross-encoder and bi-encoder)."""
    from vllm_pool import LLM

    folder = tiny_models.bert(tiny_dir / "bert_ce_dicts", cls="BertForSequenceClassification", num_labels=1)
    llm = LLM(str(folder))
    tok = llm.get_tokenizer()
    ids = tok("the dog barks", add_special_tokens=False)["input_ids"]
    ref = [o.outputs.score for o in llm.score("hello world", ["the dog barks", "a cat"], use_tqdm=False)]
    outs = llm.score({"prompt": "hello world"}, [{"prompt_token_ids": ids}, "a cat"], use_tqdm=False)
    np.testing.assert_allclose([o.outputs.score for o in outs], ref, atol=1e-6)
    with pytest.raises(ValueError, match=r"data_1: multi-modal prompts are not supported"):
        llm.score({"prompt": "x", "multi_modal_data": {}}, "y", use_tqdm=False)
    with pytest.raises(TypeError, match=r"data_2\[0\] is a dict without 'prompt'"):
        llm.score("x", [{"text": "y"}], use_tqdm=False)


def test_empty_texts_are_scored_as_the_cross_encoder_does(tiny_dir):
    """``""`` in a pair keeps the pair's special tokens: scored, as CrossEncoder.predict does."""
    from sentence_transformers import CrossEncoder

    from vllm_pool import LLM

    folder = tiny_models.bert(tiny_dir / "bert_ce_blank", cls="BertForSequenceClassification", num_labels=1)
    docs = ["a page", "", "another page"]
    ours = [o.outputs.score for o in LLM(str(folder)).score("", docs, use_tqdm=False)]
    ref = CrossEncoder(str(folder), device="cpu").predict([("", d) for d in docs])
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)


def test_lora_request_and_tokenization_kwargs(default_llm):
    ids = default_llm.embed("one two three four five", use_tqdm=False)[0].prompt_token_ids
    (cut,) = default_llm.embed("one two three four five", truncate_prompt_tokens=4, use_tqdm=False)
    (same,) = default_llm.embed(
        "one two three four five",
        lora_request=None,
        tokenization_kwargs={"truncation": True, "max_length": 4},
        use_tqdm=False,
    )
    assert len(ids) > 4 and same.prompt_token_ids == cut.prompt_token_ids and len(cut.prompt_token_ids) == 4
    assert default_llm.score("a", "b", lora_request=None, use_tqdm=False)[0].outputs.score > -1
    with pytest.raises(ValueError, match="LoRA adapters are not supported"):
        default_llm.embed("a", lora_request=object(), use_tqdm=False)
    with pytest.raises(ValueError, match=r"tokenization_kwargs \['padding'\] are not supported"):
        default_llm.embed("a", tokenization_kwargs={"padding": True})
    with pytest.raises(ValueError, match="contradicts truncate_prompt_tokens=5"):
        default_llm.embed("a", truncate_prompt_tokens=5, tokenization_kwargs={"max_length": 4})


def test_pooling_outputs_compare_by_data(default_llm):
    """vLLM's ``PoolingOutput.__eq__``: equal data (not a tensor's element-wise ``==``)."""
    a, b, c = default_llm.encode(["x y", "x y", "other"], pooling_task="token_embed", use_tqdm=False)
    assert a.outputs == b.outputs and a.outputs != c.outputs
    e1, e2 = default_llm.encode(["x y", "x y"], pooling_task="embed", use_tqdm=False)
    assert e1.outputs == e2.outputs
    assert torch.equal(e1.outputs.data, e2.outputs.data)
