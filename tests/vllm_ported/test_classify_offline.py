"""Ported from vLLM ``tests/entrypoints/pooling/classify/test_offline.py``.

Adapted: jason9693/Qwen2.5-1.5B-apeach -> the tiny ``apeach`` (a two-label Qwen2 sequence
classifier); ``LLM(...)`` without GPU options; ``softmax`` from torch (vLLM's
``tests.models.utils.softmax``).
"""

from __future__ import annotations

import pytest
import torch

from vllm_pool import LLM, ClassificationRequestOutput, PoolingParams

prompts = ["The chef prepared a delicious meal."]


def softmax(data: torch.Tensor) -> torch.Tensor:
    return torch.softmax(data.float(), dim=-1)


@pytest.fixture(scope="module")
def llm(apeach):
    return LLM(model=str(apeach), max_num_batched_tokens=32768)


def test_pooling_params(llm: LLM):
    def get_outputs(use_activation):
        outputs = llm.classify(
            prompts, pooling_params=PoolingParams(use_activation=use_activation), use_tqdm=False
        )
        assert all(isinstance(x, ClassificationRequestOutput) for x in outputs)
        return torch.tensor([x.outputs.probs for x in outputs])

    default = get_outputs(use_activation=None)
    w_activation = get_outputs(use_activation=True)
    wo_activation = get_outputs(use_activation=False)

    assert torch.allclose(default, w_activation, atol=1e-2), "Default should use activation."
    assert not torch.allclose(w_activation, wo_activation, atol=1e-2), (
        "wo_activation should not use activation."
    )
    assert torch.allclose(softmax(wo_activation), w_activation, atol=1e-2), (
        "w_activation should be close to activation(wo_activation)."
    )


def test_token_classify(llm: LLM):
    (out,) = llm.encode(prompts, pooling_task="token_classify", use_tqdm=False)
    assert out.outputs.data.shape == (len(out.prompt_token_ids), 2)


def test_score_api(llm: LLM):
    err_msg = "Score API is only enabled for num_labels == 1."
    with pytest.raises(ValueError, match=err_msg):
        llm.score("ping", "pong", use_tqdm=False)
