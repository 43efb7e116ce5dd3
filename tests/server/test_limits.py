"""The server limits: slicing of large requests, the text checks, and small requests
tokenized on the event loop."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")

from vllm_pool.engine.server.errors import APIError  # noqa: E402
from vllm_pool.engine.server.limits import check_texts, slices, token_slices  # noqa: E402


def test_slices_cover_the_prompts_in_order():
    prompts = ["a" * 5, "b" * 3, "c" * 9, {"prompt_token_ids": [1] * 4}, "d", "e" * 2]
    parts = list(slices(prompts, max_chars=8))
    assert [list(r) for r in parts] == [[0, 1], [2], [3, 4, 5]]  # the 9-character text alone
    assert [list(r) for r in slices(["x"] * 5, max_chars=100, max_inputs=2)] == [[0, 1], [2, 3], [4]]
    assert list(slices([])) == []


def test_token_slices():
    class R:
        def __init__(self, n):
            self.num_tokens = n

    reqs = [R(n) for n in (3, 3, 5, 1, 1, 1)]
    assert [list(r) for r in token_slices(reqs, 6)] == [[0, 1], [2, 3], [4, 5]]
    assert [list(r) for r in token_slices([R(50)], 6)] == [[0]]


@pytest.mark.parametrize(
    ("texts", "code", "message"),
    [
        (["ok", "x" * 11], 413, "docs[1] has 11 characters, the limit is 10 (--max-input-chars)"),
        (["ok", "\ud83d"], 400, "docs[1] is not valid Unicode: a lone surrogate"),
    ],
)
def test_check_texts(texts, code, message):
    with pytest.raises(APIError) as err:
        check_texts(texts, "docs", max_chars=10)
    assert err.value.code == code and message in err.value.message and err.value.param == "docs"


def test_check_texts_accepts_token_ids_real_pairs_and_empty_texts():
    check_texts([[1, 2, 3], "emoji \U0001f600", ""], "input", max_chars=10)
    check_texts("", "input", max_chars=10)
    check_texts([101, 102], "input", max_chars=1)


async def test_submit_in_slices_keeps_order_and_queues_two_slices_at_a_time():
    import asyncio

    from vllm_pool.engine.server.limits import submit_in_slices

    class R:
        def __init__(self, i):
            self.i, self.num_tokens = i, 4

    queued, most = [], 0

    async def submit(chunk):
        nonlocal most
        queued.append(chunk)
        most = max(most, len(queued))
        await asyncio.sleep(0)
        queued.remove(chunk)
        return [r.i * 10 for r in chunk]

    out = await submit_in_slices(submit, [R(i) for i in range(10)], max_tokens=8)
    assert out == [i * 10 for i in range(10)] and most == 2
    assert await submit_in_slices(submit, [R(1)], max_tokens=8) == [10]


async def test_a_small_request_does_not_wait_for_the_tokenizer_thread(client, default_llm):
    """Head of line: a small request (``limits.is_small``) is tokenized on the event loop, so
    it is answered while the engine's tokenizer thread is busy (as with a large request's
    slices); a large request still waits for that thread."""
    gate = threading.Event()
    busy = default_llm.tokenizer_pool.submit(gate.wait, 30)
    large = None
    try:
        small = await client.post("/v1/embeddings", json={"input": "a small one"})
        assert small.status_code == 200
        body = {"input": ["word " * 1000] * 2, "truncate_prompt_tokens": -1}  # 10,000 characters
        large = asyncio.create_task(client.post("/v1/embeddings", json=body))
        await asyncio.sleep(0.3)
        assert not large.done()  # queued behind the busy tokenizer thread
    finally:
        gate.set()
    assert busy.result(30) is True and large is not None and (await large).status_code == 200
    want = default_llm.embed(["a small one"], use_tqdm=False)[0].outputs.embedding
    assert np.allclose(small.json()["data"][0]["embedding"], want, atol=1e-5)
