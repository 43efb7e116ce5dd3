"""Issue 14 item 8: /pooling's default task and plugin requests, /score's field spellings,
/rerank usage, and response ids (vLLM's server)."""

from __future__ import annotations

import pytest
import tiny_models
import torch

TEXTS = ["hello world", "a song and music", "the capital of france"]


@pytest.fixture(scope="module")
def plugin_llm(tiny_dir):
    from vllm_pool import LLM

    folder = tiny_models.bert(
        tiny_dir / "server_plugin", cls="BertForSequenceClassification", num_labels=4,
        id2label={0: "sports", 1: "music", 2: "science", 3: "food"},
        label2id={"sports": 0, "music": 1, "science": 2, "food": 3},
    )  # fmt: skip
    return LLM(str(folder), io_processor_plugin="topk_labels")


async def test_plugin_request_over_pooling(plugin_llm, client_for):
    """A ``data`` request runs the IO processor plugin, as ``LLM.encode(..., pooling_task="plugin")``."""
    from vllm_pool.engine.server import build_app

    ref = plugin_llm.encode({"texts": TEXTS, "k": 2}, pooling_task="plugin", use_tqdm=False)
    async with client_for(build_app(plugin_llm)) as c:
        data = {"texts": TEXTS, "k": 2}
        for body in ({"data": data}, {"data": data, "task": "plugin"}):
            r = await c.post("/pooling", json=body, headers={"X-Request-Id": "abc"})
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["request_id"] == "pool-abc" and isinstance(out["created_at"], int)
            assert [[x["label"] for x in row] for row in out["data"]] == [
                [x["label"] for x in o.outputs] for o in ref
            ]
            for row, o in zip(out["data"], ref):
                assert [x["score"] for x in row] == pytest.approx([x["score"] for x in o.outputs], abs=1e-6)
        r = await c.post("/pooling", json={"data": {"texts": TEXTS, "k": 0}})
        assert r.status_code == 400 and "k must be a positive integer" in r.json()["message"]
        r = await c.post("/pooling", json={"data": {"texts": TEXTS}, "task": "classify"})
        assert r.status_code == 400 and "task must be 'plugin'" in r.json()["message"]
        # without a task: vLLM's default, token_classify on a classifier
        r = await c.post("/pooling", json={"input": TEXTS[0]})
        assert r.status_code == 200, r.text
        (tok,) = plugin_llm.encode(TEXTS[0], pooling_task="token_classify", use_tqdm=False)
        got = torch.tensor(r.json()["data"][0]["data"])
        torch.testing.assert_close(got, tok.outputs.data, atol=1e-6, rtol=1e-4)


async def test_plugin_request_without_a_plugin(client):
    r = await client.post("/pooling", json={"data": {"texts": ["a"]}})
    assert r.status_code == 400
    assert r.json()["message"].startswith("No IOProcessor plugin installed.")


async def test_score_field_spellings(client, default_llm):
    """``text_1``/``text_2``, ``data_1``/``data_2``, ``queries``/``documents`` and ``queries``/``items``."""
    ref = [o.outputs.score for o in default_llm.score(TEXTS[0], TEXTS, use_tqdm=False)]
    spellings = [("text_1", "text_2"), ("data_1", "data_2"), ("queries", "documents"), ("queries", "items")]
    for first, second in spellings:
        r = await client.post("/score", json={first: TEXTS[0], second: TEXTS})
        assert r.status_code == 200, (first, second, r.text)
        assert [d["score"] for d in r.json()["data"]] == pytest.approx(ref, abs=1e-5)
    r = await client.post("/score", json={"text_1": "a", "data_1": "b", "text_2": "c"})
    assert r.status_code == 400 and "Give only one of ['text_1', 'data_1']" in r.json()["message"]
    r = await client.post("/score", json={"data_1": "a"})
    assert r.status_code == 400 and r.json()["param"] == "text_2"
    body = '{"data_1": "a\\ud800", "data_2": "b"}'  # a lone surrogate, escaped in the JSON
    r = await client.post("/score", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "data_1 is not valid Unicode" in r.json()["message"]


async def test_response_ids_and_rerank_usage(client):
    """Ids: ``<prefix>-<X-Request-Id or a random hex>`` (embd, pool, classify, score, rerank)."""
    r = await client.post("/score", json={"text_1": "a", "text_2": "b"}, headers={"X-Request-Id": "r1"})
    assert r.json()["id"] == "score-r1"
    r = await client.post("/v1/embeddings", json={"input": "a"})
    ident = r.json()["id"]
    assert ident.startswith("embd-") and len(ident) == len("embd-") + 32
    r = await client.post("/rerank", json={"query": "a b", "documents": ["a", "b c"]})
    usage = r.json()["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] > 0
