"""The engine core with real (tiny) models: fault isolation, lazy outputs, shared callers, chunks."""

from __future__ import annotations

import threading

import pytest
import torch
from tiny_models import TEXTS
from vllm_pool.engine.outputs import EmbeddingOutput, output_lists, stack_outputs

from vllm_pool import LLM


class FailOnToken(torch.nn.Module):
    """Delegates to ``model`` but fails (like a kernel error) on batches holding ``token``."""

    def __init__(self, model: torch.nn.Module, token: int) -> None:
        super().__init__()
        self.inner, self.token = model, token

    def forward(self, input_ids, **kwargs):
        if bool((input_ids == self.token).any()):
            raise RuntimeError(f"kernel failure on token {self.token}")
        return self.inner(input_ids=input_ids, **kwargs)


@pytest.fixture(scope="module")
def llm(tiny_bert):
    return LLM(str(tiny_bert))


def test_failing_input_fails_its_own_job_only(tiny_bert):
    llm = LLM(str(tiny_bert))
    ref = llm.embed(TEXTS[:3], use_tqdm=False)
    used = {t for r in llm.make_requests(TEXTS, "embed") for t in r.prompt_token_ids}
    token = next(t for t in range(5, llm.input_processor.vocab_size) if t not in used)
    llm.runner.model = FailOnToken(llm.runner.model, token)
    good = llm.core.submit(llm.make_requests(TEXTS[:3], "embed"), {"embed": None})
    bad = llm.core.submit(llm.make_requests([{"prompt_token_ids": [2, token, 3]}], "embed"), {"embed": None})
    other = llm.core.submit(llm.make_requests(TEXTS[3:5], "embed"), {"embed": None})
    llm.core.wait([good, other])
    for got, want in zip(good.future.result()["embed"], ref):
        torch.testing.assert_close(got, want.outputs.data, atol=1e-5, rtol=1e-5)
    assert len(other.future.result()["embed"]) == 2
    with pytest.raises(RuntimeError, match=f"kernel failure on token {token}"):
        bad.future.result(0)
    with pytest.raises(RuntimeError, match="kernel failure"):  # offline: the caller gets the error
        llm.embed([{"prompt_token_ids": [2, token, 3]}], use_tqdm=False)
    assert len(llm.embed(TEXTS, use_tqdm=False)) == len(TEXTS)  # and the engine stays usable


def test_outputs_keep_tensors_and_make_lists_on_read(llm):
    outs = llm.embed(TEXTS, use_tqdm=False)
    first = outs[0].outputs
    assert isinstance(first, EmbeddingOutput)
    assert isinstance(first.data, torch.Tensor) and first.data.dtype == torch.float32
    assert first._list is None  # nothing converted yet
    emb = first.embedding
    assert type(emb) is list and all(type(x) is float for x in emb)
    assert emb == first.data.tolist() and first.hidden_size == len(emb)
    assert first.embedding is emb  # converted once
    assert output_lists(outs) == [o.outputs.embedding for o in outs]
    torch.testing.assert_close(stack_outputs(outs), torch.tensor([o.outputs.embedding for o in outs]))
    assert EmbeddingOutput([1.0, 2.0]) == EmbeddingOutput(torch.tensor([1.0, 2.0]))
    probs_like = llm.score(TEXTS[0], TEXTS[1:3], use_tqdm=False)
    assert all(type(o.outputs.score) is float for o in probs_like)
    assert output_lists(probs_like) == [o.outputs.score for o in probs_like]


def test_concurrent_offline_callers_get_their_own_results(llm):
    ref = {k: llm.embed(TEXTS[k:] + TEXTS[:k], use_tqdm=False) for k in range(4)}
    got: dict[int, list] = {}

    def call(k: int) -> None:
        got[k] = llm.embed(TEXTS[k:] + TEXTS[:k], use_tqdm=False)

    threads = [threading.Thread(target=call, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for k in range(4):
        assert [o.prompt_token_ids for o in got[k]] == [o.prompt_token_ids for o in ref[k]]
        torch.testing.assert_close(stack_outputs(got[k]), stack_outputs(ref[k]), atol=1e-5, rtol=1e-5)


def test_large_inputs_are_tokenized_in_chunks_that_join_the_queue(tiny_bert):
    llm = LLM(str(tiny_bert))
    prompts = [f"{t} {i}" for i, t in enumerate(TEXTS * 4)]
    ref = llm.embed(prompts, use_tqdm=False)
    llm.tokenize_chunk = 5
    submitted = []
    submit = llm.core.submit

    def counting(reqs, tasks, on_batch=None):
        submitted.append(len(reqs))
        return submit(reqs, tasks, on_batch)

    llm.core.submit = counting
    outs = llm.embed(prompts, use_tqdm=False)
    assert submitted == [5] * (len(prompts) // 5) + ([len(prompts) % 5] if len(prompts) % 5 else [])
    assert [o.prompt_token_ids for o in outs] == [o.prompt_token_ids for o in ref]
    torch.testing.assert_close(stack_outputs(outs), stack_outputs(ref), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="outside the vocabulary"):  # checked before any chunk runs
        llm.embed(prompts + [{"prompt_token_ids": [10**9]}], use_tqdm=False)
    assert llm.core.num_pending == 0
    # a GPU's schedule (first_tokenize_chunk): a small first chunk, then doubling chunks
    submitted.clear()
    llm.first_tokenize_chunk, llm.tokenize_chunk = 2, 8
    outs = llm.embed(prompts, use_tqdm=False)
    assert submitted[:4] == [2, 4, 8, 8] and sum(submitted) == len(prompts)
    torch.testing.assert_close(stack_outputs(outs), stack_outputs(ref), atol=1e-5, rtol=1e-5)


def test_chunk_bounds_cover_the_input_once():
    from vllm_pool.engine.llm import chunk_bounds

    for n, size, first in [(0, 4096, None), (1, 4096, 256), (2000, 4096, 256), (13, 5, None), (9, 4, 8)]:
        bounds = chunk_bounds(n, size, first)
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert all(0 < stop - start <= size for start, stop in bounds if n)
    assert [b - a for a, b in chunk_bounds(2000, 4096, 256)] == [256, 512, 1024, 208]
    assert [b - a for a, b in chunk_bounds(12, 5)] == [5, 5, 2]
