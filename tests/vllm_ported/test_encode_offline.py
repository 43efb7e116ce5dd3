"""Ported from vLLM ``tests/entrypoints/pooling/llm/test_encode.py``.

Adapted: intfloat/multilingual-e5-small -> the tiny ``e5_small``; ``LLM(...)`` without GPU
options. Also vLLM's ``LLM.encode`` without ``pooling_task`` (its message, from
``vllm/entrypoints/llm.py``, which its tests match).
"""

from __future__ import annotations

import pytest

from vllm_pool import LLM, PoolingParams

PROMPTS = [
    "Hello, my name is",
    "The president of the United States is",
    "The capital of France is",
    "The future of AI is",
]


@pytest.fixture(scope="module")
def llm(e5_small):
    return LLM(model=str(e5_small), max_num_batched_tokens=32768)


def test_multiple_pooling_params(llm: LLM):
    pooling_params = [
        PoolingParams(),
        PoolingParams(),
        PoolingParams(),
        PoolingParams(),
    ]

    # Multiple PoolingParams should be matched with each prompt
    outputs = llm.encode(PROMPTS, pooling_params=pooling_params, pooling_task="embed")
    assert len(PROMPTS) == len(outputs)

    # Exception raised, if the size of params does not match the size of prompts
    with pytest.raises(ValueError):
        outputs = llm.encode(PROMPTS, pooling_params=pooling_params[:3], pooling_task="embed")

    # Single PoolingParams should be applied to every prompt
    single_pooling_params = PoolingParams()
    outputs = llm.encode(PROMPTS, pooling_params=single_pooling_params, pooling_task="embed")
    assert len(PROMPTS) == len(outputs)

    # pooling_params is None, default params should be applied
    outputs = llm.encode(PROMPTS, pooling_params=None, pooling_task="embed")
    assert len(PROMPTS) == len(outputs)


def test_right_side_truncation(llm: LLM):
    # Embeddings models should truncate the end of the prompt
    tokenizer = llm.get_tokenizer()
    assert tokenizer.truncation_side == "right"


def test_pooling_task_required(llm: LLM):
    with pytest.raises(ValueError, match="pooling_task required for `LLM.encode`"):
        llm.encode(PROMPTS)
