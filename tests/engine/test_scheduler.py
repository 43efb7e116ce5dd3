"""Token-budget batching."""

from __future__ import annotations

import random

import pytest
from vllm_pool.engine.params import PoolingParams
from vllm_pool.engine.scheduler import schedule
from vllm_pool.engine.types import Request


def _reqs(lengths):
    return [Request(index=i, prompt_token_ids=[1] * n, params=PoolingParams()) for i, n in enumerate(lengths)]


@pytest.mark.parametrize("budget, max_seqs", [(64, 8), (256, 4), (1000, 100), (10, 3)])
def test_every_request_once_and_within_budget(budget, max_seqs):
    rng = random.Random(budget)
    reqs = _reqs([rng.randint(1, 120) for _ in range(200)])
    batches = schedule(reqs, budget, max_seqs)
    seen = sorted(r.index for b in batches for r in b.requests)
    assert seen == list(range(200))
    for b in batches:
        assert len(b.requests) <= max_seqs
        assert b.padded_tokens <= budget or len(b.requests) == 1


def test_sorted_by_tokens_keeps_padding_low():
    rng = random.Random(0)
    reqs = _reqs([rng.randint(10, 300) for _ in range(1000)])
    batches = schedule(reqs, 2048, 64)
    padded = sum(b.padded_tokens for b in batches)
    real = sum(b.num_tokens for b in batches)
    assert padded / real < 1.05  # random order at batch 32 pads far more


def test_long_request_runs_alone():
    batches = schedule(_reqs([500, 3, 3]), 100, 8)
    assert [len(b.requests) for b in batches] == [1, 2]


def test_bad_budget():
    with pytest.raises(ValueError):
        schedule(_reqs([1]), 0, 1)


def test_limits_set_on_the_llm_apply_to_the_next_batch(default_llm):
    llm = default_llm
    budget, seqs = llm.max_num_batched_tokens, llm.max_num_seqs
    seen = []
    llm.core.on_batch = lambda stats: seen.append(stats.num_prompts)
    try:
        llm.max_num_seqs = 3
        assert llm.core.scheduler.max_num_seqs == 3
        llm.embed(["a b c", "d e f", "g h i", "j k l", "m n o", "p q r", "s t u"], use_tqdm=False)
        assert seen == [3, 3, 1]
        with pytest.raises(ValueError, match="max_num_seqs must be a positive integer, got 0"):
            llm.max_num_seqs = 0
        with pytest.raises(ValueError, match="max_num_batched_tokens must be a positive integer"):
            llm.max_num_batched_tokens = 2.5
        with pytest.raises(ValueError, match="max_num_seqs must be a positive integer, got None"):
            llm.max_num_seqs = None  # not silently ignored
        assert llm.max_num_seqs == 3  # a refused value changes nothing
    finally:
        llm.core.on_batch = None
        llm.max_num_seqs, llm.max_num_batched_tokens = seqs, budget
