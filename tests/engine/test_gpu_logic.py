"""GPU code paths, exercised on the CPU: out-of-memory splitting, memory-sized token budget, dtype."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from fakes import OOMAbove
from tiny_models import TEXTS


def test_oom_splits_the_batch_and_gives_the_same_outputs(tiny_bert):
    from vllm_pool import LLM

    llm = LLM(str(tiny_bert), packed=False)  # padded rows (the packed split: test_packed.py)
    ref = np.array([o.outputs.embedding for o in llm.embed(TEXTS, use_tqdm=False)])
    fake = OOMAbove(llm.runner.model, limit=2)
    llm.runner.model = fake
    out = np.array([o.outputs.embedding for o in llm.embed(TEXTS, use_tqdm=False)])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert max(fake.calls) > 2  # the first try was too big
    assert sum(c for c in fake.calls if c <= 2) == len(TEXTS)  # the halves covered every prompt once


def test_an_oom_lowers_the_token_budget_for_later_batches(tiny_bert):
    """After a batch that did not fit, later batches take at most half its tokens (padding
    included): the next calls do not pay for as many failed forward passes."""
    from vllm_pool import LLM

    class OOMAboveTokens(torch.nn.Module):
        def __init__(self, model, limit):
            super().__init__()
            self.inner, self.limit, self.failed = model, limit, []

        def forward(self, input_ids, **kwargs):
            if input_ids.numel() > self.limit:
                self.failed.append(input_ids.numel())
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return self.inner(input_ids=input_ids, **kwargs)

    llm = LLM(str(tiny_bert), packed=False, max_num_batched_tokens=4096, max_num_seqs=64)
    texts = [t * 3 for t in TEXTS] * 4
    ref = np.array([o.outputs.embedding for o in llm.embed(texts, use_tqdm=False)])
    reported = []
    lower = llm.runner.on_oom
    llm.runner.on_oom = lambda tokens: (reported.append(tokens), lower(tokens))
    llm.runner.model = fake = OOMAboveTokens(llm.runner.model, limit=300)
    out = np.array([o.outputs.embedding for o in llm.embed(texts, use_tqdm=False)])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert reported and llm.max_num_batched_tokens == max(min(reported) // 2, llm.model_config.max_model_len)
    first = len(fake.failed)
    fake.failed.clear()
    out = np.array([o.outputs.embedding for o in llm.embed(texts, use_tqdm=False)])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert len(fake.failed) < first


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
    asked = []  # the engine's device is the one asked, not the current one
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: asked.append(d) or (9, 0))
    assert resolve_dtype("auto", torch.device("cuda", 1)) == torch.bfloat16
    assert asked == [torch.device("cuda", 1)]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))  # a T4: no bf16
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("float32", torch.device("cuda")) == torch.float32


@pytest.mark.parametrize("has_kernels", [True, False])
def test_half_precision_on_a_cpu_without_its_kernels_warns(monkeypatch, caplog, has_kernels):
    """bf16 on an AVX2-only CPU runs emulated (measured: 0.25x Sentence Transformers fp32)."""
    from vllm_pool.engine import config, cpu_linear

    monkeypatch.setattr(cpu_linear, "fast_half", lambda dtype: has_kernels)
    with caplog.at_level(logging.WARNING, logger="vllm_pool.engine.config"):
        assert config.resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
        assert config.resolve_dtype("float32", torch.device("cpu")) == torch.float32
        assert config.resolve_dtype("bfloat16", torch.device("cuda")) == torch.bfloat16
    warnings = [r.getMessage() for r in caplog.records]
    if has_kernels:
        assert warnings == []
    else:
        assert len(warnings) == 1 and "dtype=bfloat16 on a CPU without native bf16" in warnings[0]


def test_cuda_device_without_cuda_is_a_clear_error(tiny_bert):
    from vllm_pool import LLM

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        LLM(str(tiny_bert), device="cuda")


def test_next_batch_is_staged_while_the_current_one_runs(tiny_bert, monkeypatch):
    """The core's loop with the real runner: batch i+1's inputs are built (and, on CUDA, copied)
    after batch i is queued on the device and before batch i's outputs are copied back."""
    from vllm_pool.engine.core import EngineCore

    from vllm_pool import LLM

    llm = LLM(str(tiny_bert), max_num_batched_tokens=48)
    llm.core = EngineCore(llm.core.executor, llm.core.scheduler, output_thread=True)  # as on CUDA
    executor, events = llm.core.executor, []
    stage, execute, to_host = executor.stage, executor.execute, executor.to_host

    def staged(b):
        events.append(("stage", b.requests[0].index))
        return stage(b)

    def executed(s, b):
        events.append(("execute", s.batch.requests[0].index))
        return execute(s, b)

    monkeypatch.setattr(executor, "stage", staged)
    monkeypatch.setattr(executor, "execute", executed)
    monkeypatch.setattr(executor, "to_host", lambda o: events.append(("to_host",)) or to_host(o))
    outs = llm.embed(TEXTS, use_tqdm=False)
    firsts = [e[1] for e in events if e[0] == "execute"]
    assert len(firsts) >= 3
    expected = [("stage", firsts[0])]
    for i, first in enumerate(firsts):
        expected.append(("execute", first))
        if i + 1 < len(firsts):
            expected.append(("stage", firsts[i + 1]))
        expected.append(("to_host",))
    assert events == expected
    ref = LLM(str(tiny_bert)).embed(TEXTS, use_tqdm=False)
    for a, b in zip(outs, ref):
        torch.testing.assert_close(a.outputs.data, b.outputs.data, atol=1e-5, rtol=1e-5)


def test_per_request_splits_never_read_the_device_bounds(tiny_bert):
    """Token poolers split hidden states with the host lengths the runner passes (on CUDA a
    read of ``cu_seqlens`` would wait for the device); a meta tensor fails if it is read."""
    from vllm_pool.engine.methods import skip_instructions, step_pool
    from vllm_pool.engine.types import Batch, HiddenStates

    from vllm_pool import LLM

    llm = LLM(str(tiny_bert))
    requests = llm.make_requests(TEXTS[:3], "token_embed")
    hidden = llm.runner.forward(Batch(requests))
    assert hidden.lengths == [r.num_tokens for r in requests] == hidden.seq_lens.tolist()

    data, ids = torch.randn(6, 4), torch.arange(6)
    unread = HiddenStates(data=data, cu_seqlens=torch.empty(3, device="meta"), token_ids=ids, lengths=[2, 4])
    assert [t.shape[0] for t in unread.split()] == [2, 4]
    assert [t.shape[0] for t in step_pool(unread, [None, 3])] == [2, 1]
    cut = skip_instructions(unread, [1, 2])
    assert cut.lengths == [1, 2] and torch.equal(cut.data, data[[1, 4, 5]])
    # without host lengths the same answers come from the device bounds
    read = HiddenStates(data=data, cu_seqlens=torch.tensor([0, 2, 6]), token_ids=ids)
    assert [t.shape[0] for t in read.split()] == [2, 4]
    assert torch.equal(skip_instructions(read, [1, 2]).data, cut.data)
