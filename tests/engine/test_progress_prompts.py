"""The progress bar counts prompts: with chunked processing a long prompt's chunk requests do not
advance it past its total."""

from __future__ import annotations

import pytest
from vllm_pool.engine.chunked import num_prompts, prompt_progress
from vllm_pool.engine.params import PoolingParams
from vllm_pool.engine.types import Request

from vllm_pool import LLM

TEXTS = ["hello world"] * 6 + ["the cat and the dog " * 10]  # the last is over 32 tokens: 2 chunks


class Bar:
    """A tqdm stand-in that records its total and every update."""

    bars: list[Bar] = []

    def __init__(self, total: int, **kwargs: object) -> None:
        self.total, self.n, self.updates = total, 0, []
        Bar.bars.append(self)

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> bool:
        return False

    def update(self, n: int) -> None:
        self.updates.append(n)
        self.n += n
        assert self.n <= self.total, "the bar passed its total"


@pytest.fixture(scope="module")
def llm(tiny_bert) -> LLM:
    return LLM(
        str(tiny_bert),
        max_model_len=32,
        pooler_config={"enable_chunked_processing": True, "max_embed_len": 500},
    )


@pytest.mark.parametrize("tokenize_chunk", [3, 4096])  # several tokenize chunks, or one
def test_bar_counts_prompts_not_chunks(llm, tokenize_chunk) -> None:
    old = llm.tokenize_chunk
    llm.tokenize_chunk = tokenize_chunk
    Bar.bars.clear()
    try:
        outs = llm.embed(TEXTS, use_tqdm=Bar)
    finally:
        llm.tokenize_chunk = old
    assert len(llm.tokenizer(TEXTS[-1])["input_ids"]) > 32  # really chunked
    (bar,) = Bar.bars
    assert bar.total == len(TEXTS) == len(outs)
    assert bar.n == len(TEXTS) and all(n > 0 for n in bar.updates)


def test_prompt_progress_reaches_the_prompts_exactly() -> None:
    indices = [0, 0, 0, 1, 2, 2, 3]
    requests = [Request(index=i, prompt_token_ids=[1], params=PoolingParams()) for i in indices]
    assert num_prompts(requests) == 4
    seen: list[int] = []
    on_batch = prompt_progress(seen.append, requests)
    for n in (1, 2, 1, 2, 1):
        on_batch(n)
        assert sum(seen) <= 4
    assert sum(seen) == 4 and all(n > 0 for n in seen)
    plain = requests[2:4]  # one request per prompt: the bar's own update
    assert prompt_progress(seen.append, plain) == seen.append
    assert prompt_progress(None, requests) is None
