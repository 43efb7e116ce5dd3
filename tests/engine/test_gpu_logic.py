"""GPU code paths, exercised on the CPU: out-of-memory splitting, memory-sized token budget, dtype."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakes import OOMAbove
from tiny_models import TEXTS


def test_oom_splits_the_batch_and_gives_the_same_outputs(tiny_bert):
    from vllm_pool import LLM

    llm = LLM(str(tiny_bert))
    ref = np.array([o.outputs.embedding for o in llm.embed(TEXTS, use_tqdm=False)])
    fake = OOMAbove(llm.runner.model, limit=2)
    llm.runner.model = fake
    out = np.array([o.outputs.embedding for o in llm.embed(TEXTS, use_tqdm=False)])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert max(fake.calls) > 2  # the first try was too big
    assert sum(c for c in fake.calls if c <= 2) == len(TEXTS)  # the halves covered every prompt once


def test_single_prompt_that_does_not_fit(tiny_bert):
    from vllm_pool import LLM

    llm = LLM(str(tiny_bert))
    llm.runner.model = OOMAbove(llm.runner.model, limit=0)
    with pytest.raises(MemoryError, match="One prompt of .* tokens does not fit in device memory"):
        llm.embed(TEXTS[:3], use_tqdm=False)
    llm.runner.model = llm.runner.model.inner
    assert len(llm.embed("works again", use_tqdm=False)) == 1


def test_token_budget_scales_with_free_memory(tiny_bert):
    from vllm_pool.engine.runner import token_budget_for_memory

    from vllm_pool import LLM

    cfg = LLM(str(tiny_bert)).model_config
    small = token_budget_for_memory(64 * 2**20, cfg)
    large = token_budget_for_memory(8 * 2**30, cfg)
    packed = token_budget_for_memory(64 * 2**20, cfg, packed=True)
    assert packed > small  # no attention-score term with Flash Attention
    assert cfg.max_model_len <= small < large <= 262_144
    assert large % 256 == 0


def test_dtype_auto_per_device(monkeypatch):
    from vllm_pool.engine.config import resolve_dtype

    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("float32", torch.device("cuda")) == torch.float32


def test_cuda_device_without_cuda_is_a_clear_error(tiny_bert):
    from vllm_pool import LLM

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        LLM(str(tiny_bert), device="cuda")


def test_next_batch_is_staged_while_the_current_one_runs(tiny_bert, monkeypatch):
    """run(): batch i+1's inputs are built (and, on CUDA, copied) before batch i is handed back."""
    from vllm_pool.engine.scheduler import schedule

    from vllm_pool import LLM

    llm = LLM(str(tiny_bert))
    runner, events = llm.runner, []
    stage, forward = runner.stage, runner.forward
    monkeypatch.setattr(runner, "stage", lambda b: events.append(("stage", id(b))) or stage(b))
    monkeypatch.setattr(runner, "forward", lambda s: events.append(("forward", id(s.batch))) or forward(s))
    requests = llm.make_requests(TEXTS, "embed")
    batches = list(schedule(requests, max_num_batched_tokens=48, max_num_seqs=64))
    assert len(batches) >= 3
    for batch, hidden in runner.run(batches):
        events.append(("yield", id(batch)))
        assert hidden.data.shape[0] == batch.num_tokens
    ids = [id(b) for b in batches]
    expected = [("stage", ids[0])]
    for i, b in enumerate(ids):
        expected.append(("forward", b))
        if i + 1 < len(ids):
            expected.append(("stage", ids[i + 1]))
        expected.append(("yield", b))
    assert events == expected
