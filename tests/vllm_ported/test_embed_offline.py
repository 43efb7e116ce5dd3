"""Ported from vLLM ``tests/entrypoints/pooling/embed/test_offline.py``.

Adapted: intfloat/multilingual-e5-small -> the tiny ``e5_small`` (same shape: XLM-RoBERTa,
mean pooling, normalized); the prompt's token ids and the embedding size are read from the
tiny model instead of pasted; ``LLM(...)`` without GPU options. ``test_pooling_params``
uses ``normalize`` (the spec's field; newer vLLM renamed it). ``test_unsupported_tasks``
keeps ``classify`` / ``token_classify`` (an embedding model here supports ``token_embed``,
as the spec's table says).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vllm_pool import LLM, EmbeddingRequestOutput, PoolingParams

prompt = "The chef prepared a delicious meal."


@pytest.fixture(scope="module")
def llm(e5_small):
    return LLM(model=str(e5_small), max_num_batched_tokens=32768)


@pytest.fixture(scope="module")
def prompt_token_ids(llm):
    return llm.get_tokenizer()(prompt)["input_ids"]


@pytest.fixture(scope="module")
def embedding_size(llm):
    return llm.model_config.hf_config.hidden_size


def test_str_prompts(llm: LLM, prompt_token_ids, embedding_size):
    outputs = llm.embed(prompt, use_tqdm=False)
    assert len(outputs) == 1
    assert isinstance(outputs[0], EmbeddingRequestOutput)
    assert outputs[0].prompt_token_ids == prompt_token_ids
    assert len(outputs[0].outputs.embedding) == embedding_size


def test_token_ids_prompts(llm: LLM, prompt_token_ids, embedding_size):
    outputs = llm.embed([{"prompt_token_ids": prompt_token_ids}], use_tqdm=False)
    assert len(outputs) == 1
    assert isinstance(outputs[0], EmbeddingRequestOutput)
    assert outputs[0].prompt_token_ids == prompt_token_ids
    assert len(outputs[0].outputs.embedding) == embedding_size


def test_list_prompts(llm: LLM, prompt_token_ids, embedding_size):
    outputs = llm.embed([prompt, {"prompt_token_ids": prompt_token_ids}], use_tqdm=False)
    assert len(outputs) == 2
    for i in range(len(outputs)):
        assert isinstance(outputs[i], EmbeddingRequestOutput)
        assert outputs[i].prompt_token_ids == prompt_token_ids
        assert len(outputs[i].outputs.embedding) == embedding_size
    assert outputs[0].outputs.embedding == pytest.approx(outputs[1].outputs.embedding, abs=1e-6)


def test_pooling_params(llm: LLM):
    def get_outputs(normalize):
        outputs = llm.embed([prompt], pooling_params=PoolingParams(normalize=normalize), use_tqdm=False)
        return torch.tensor([x.outputs.embedding for x in outputs])

    default = get_outputs(normalize=None)
    w_normal = get_outputs(normalize=True)
    wo_normal = get_outputs(normalize=False)

    assert torch.allclose(default, w_normal, atol=1e-2), "Default should use normal."
    assert not torch.allclose(w_normal, wo_normal, atol=1e-2), "wo_normal should not use normal."
    assert torch.allclose(w_normal, F.normalize(wo_normal, p=2, dim=-1), atol=1e-2), (
        "w_normal should be close to normal(wo_normal)."
    )


@pytest.mark.parametrize("task", ["classify", "token_classify"])
def test_unsupported_tasks(llm: LLM, task: str):
    err_msg = "Classification API is not supported by this model.+"
    with pytest.raises(ValueError, match=err_msg):
        llm.encode(prompt, pooling_task=task, use_tqdm=False)
