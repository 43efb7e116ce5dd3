"""Each endpoint, in process, against `LLM` on the same model: same numbers, spec shapes."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch

TEXTS = [
    "The capital of France is Paris.",
    "hello world",
    "Python is a programming language that lets you work quickly and integrate systems effectively.",
]


def _close(a: list[float], b: list[float], atol: float = 1e-5) -> None:
    torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=atol, rtol=1e-4)


async def test_embeddings_match_llm(client, default_llm):
    r = await client.post("/v1/embeddings", json={"input": TEXTS, "model": default_llm.model_name})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["id"].startswith("embd-")
    assert body["model"] == default_llm.model_name
    ref = default_llm.embed(TEXTS, use_tqdm=False)
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    for d, o in zip(body["data"], ref):
        assert d["object"] == "embedding"
        _close(d["embedding"], o.outputs.embedding)
    n = sum(len(o.prompt_token_ids) for o in ref)
    assert body["usage"] == {
        "prompt_tokens": n,
        "total_tokens": n,
        "completion_tokens": 0,
        "prompt_tokens_details": None,
    }


async def test_embeddings_single_string_and_token_ids(client, default_llm):
    ref = default_llm.embed([TEXTS[1]], use_tqdm=False)[0]
    ids = ref.prompt_token_ids
    for payload in ({"input": TEXTS[1]}, {"input": ids}, {"input": [ids, ids]}):
        r = await client.post("/v1/embeddings", json=payload)
        assert r.status_code == 200, r.text
        for d in r.json()["data"]:
            _close(d["embedding"], ref.outputs.embedding)


async def test_embeddings_base64(client, default_llm):
    r = await client.post("/v1/embeddings", json={"input": TEXTS, "encoding_format": "base64"})
    assert r.status_code == 200, r.text
    ref = default_llm.embed(TEXTS, use_tqdm=False)
    for d, o in zip(r.json()["data"], ref):
        vec = np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4")
        _close(vec.tolist(), o.outputs.embedding)


async def test_embeddings_truncate_prompt_tokens(client, default_llm):
    r = await client.post("/v1/embeddings", json={"input": TEXTS, "truncate_prompt_tokens": 5})
    assert r.status_code == 200, r.text
    ref = default_llm.embed(TEXTS, use_tqdm=False, truncate_prompt_tokens=5)
    assert r.json()["usage"]["prompt_tokens"] == sum(len(o.prompt_token_ids) for o in ref) == 5 + 4 + 5
    for d, o in zip(r.json()["data"], ref):
        _close(d["embedding"], o.outputs.embedding)


async def test_embeddings_normalize_false(client, default_llm):
    from vllm_pool import PoolingParams

    r = await client.post("/v1/embeddings", json={"input": TEXTS[0], "normalize": False})
    assert r.status_code == 200, r.text
    ref = default_llm.embed(TEXTS[0], PoolingParams(normalize=False), use_tqdm=False)[0]
    _close(r.json()["data"][0]["embedding"], ref.outputs.embedding)


@pytest.mark.parametrize("task", ["embed", "token_embed"])
async def test_pooling_matches_encode(client, default_llm, task):
    r = await client.post("/pooling", json={"model": default_llm.model_name, "input": TEXTS, "task": task})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("pool-")
    ref = default_llm.encode(TEXTS, pooling_task=task, use_tqdm=False)
    for d, o in zip(body["data"], ref):
        assert d["object"] == "pooling"
        torch.testing.assert_close(torch.tensor(d["data"]), o.outputs.data, atol=1e-5, rtol=1e-4)


async def test_pooling_default_task_is_vllms(client, default_llm):
    """Without a task, /pooling runs vLLM's default: token_embed (else token_classify, else plugin)."""
    r = await client.post("/pooling", json={"input": TEXTS[0]})
    assert r.status_code == 200, r.text
    (ref,) = default_llm.encode(TEXTS[0], pooling_task="token_embed", use_tqdm=False)
    _close(r.json()["data"][0]["data"], ref.outputs.data.tolist())


async def test_score_bi_encoder_is_cosine(client, default_llm):
    docs = TEXTS
    r = await client.post("/score", json={"text_1": "What is the capital of France?", "text_2": docs})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("score-") and [d["object"] for d in body["data"]] == ["score"] * 3
    ref = default_llm.score("What is the capital of France?", docs, use_tqdm=False)
    _close([d["score"] for d in body["data"]], [o.outputs.score for o in ref])
    r2 = await client.post("/v1/score", json={"queries": TEXTS, "documents": TEXTS})
    assert r2.status_code == 200, r2.text
    _close([d["score"] for d in r2.json()["data"]], [1.0, 1.0, 1.0])


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank"])
async def test_rerank_sorted_top_n(client, default_llm, path):
    query = "What is the capital of France?"
    r = await client.post(path, json={"query": query, "documents": TEXTS, "top_n": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("rerank-") and body["usage"]["total_tokens"] > 0
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"]
    ref = [o.outputs.score for o in default_llm.score(query, TEXTS, use_tqdm=False)]
    order = sorted(range(3), key=lambda i: -ref[i])[:2]
    assert [x["index"] for x in body["results"]] == order
    for x in body["results"]:
        assert x["document"] == {"text": TEXTS[x["index"]]}
        assert x["relevance_score"] == pytest.approx(ref[x["index"]], abs=1e-5)
    r = await client.post(path, json={"query": query, "documents": TEXTS, "return_documents": False})
    results = r.json()["results"]
    assert len(results) == 3 and all("document" not in x for x in results)
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True)


async def test_tokenize_detokenize(client, default_llm):
    tok = default_llm.get_tokenizer()
    r = await client.post("/tokenize", json={"prompt": "hello world", "return_token_strs": True})
    assert r.status_code == 200, r.text
    ids = tok("hello world")["input_ids"]
    assert r.json() == {
        "count": len(ids),
        "max_model_len": default_llm.model_config.max_model_len,
        "tokens": ids,
        "token_strs": tok.convert_ids_to_tokens(ids),
    }
    r = await client.post("/tokenize", json={"prompt": "hello world", "add_special_tokens": False})
    assert r.json()["tokens"] == tok("hello world", add_special_tokens=False)["input_ids"]
    r = await client.post("/detokenize", json={"tokens": r.json()["tokens"]})
    assert r.status_code == 200 and r.json() == {"prompt": "hello world"}


async def test_models_health_metrics(client, default_llm):
    r = await client.get("/v1/models")
    assert r.status_code == 200
    (model,) = r.json()["data"]
    assert model["id"] == default_llm.model_name and model["object"] == "model"
    assert model["max_model_len"] == default_llm.model_config.max_model_len
    assert (await client.get("/health")).status_code == 200
    await client.post("/v1/embeddings", json={"input": TEXTS})
    text = (await client.get("/metrics")).text
    for name in (
        'vllm_pool_requests_total{code="200",endpoint="/v1/embeddings"} 1',
        'vllm_pool_prompt_tokens_total{endpoint="/v1/embeddings"}',
        'vllm_pool_inputs_total{endpoint="/v1/embeddings"} 3',
        "vllm_pool_request_latency_seconds_bucket",
        'vllm_pool_batch_size_count{task="embed"} 1',
        "vllm_pool_batch_padded_tokens_sum",
        "vllm_pool_queue_seconds_count",
        "vllm_pool_queue_inputs 0",
    ):
        assert name in text, name


# ---------------------------------------------------------------- classification / cross-encoder models
@pytest.fixture(scope="module")
def classifier_llm(tiny_dir):
    import tiny_models

    from vllm_pool import LLM

    folder = tiny_models.bert(
        tiny_dir / "server_cls3",
        cls="BertForSequenceClassification",
        num_labels=3,
        id2label={0: "neg", 1: "neutral", 2: "pos"},
        label2id={"neg": 0, "neutral": 1, "pos": 2},
    )
    return LLM(str(folder))


@pytest.fixture(scope="module")
def cross_encoder_llm(tiny_dir):
    import tiny_models

    from vllm_pool import LLM

    folder = tiny_models.bert(tiny_dir / "server_cls1", cls="BertForSequenceClassification", num_labels=1)
    return LLM(str(folder))


TINY = ["the capital of france is paris", "hello world", "python code and a function"]


async def test_classify_matches_llm(classifier_llm, client_for):
    from vllm_pool.engine.server import build_app

    async with client_for(build_app(classifier_llm)) as c:
        r = await c.post("/classify", json={"input": TINY})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["id"].startswith("classify-")
        ref = classifier_llm.classify(TINY, use_tqdm=False)
        for d, o in zip(body["data"], ref):
            assert d["num_classes"] == 3
            _close(d["probs"], o.outputs.probs)
            assert d["label"] == ["neg", "neutral", "pos"][int(np.argmax(o.outputs.probs))]
        r = await c.post("/classify", json={"input": TINY[0], "use_activation": False})
        from vllm_pool import PoolingParams

        raw = classifier_llm.classify(TINY[0], PoolingParams(use_activation=False), use_tqdm=False)[0]
        _close(r.json()["data"][0]["probs"], raw.outputs.probs)
        r = await c.post("/pooling", json={"input": TINY, "task": "classify"})
        for d, o in zip(r.json()["data"], ref):
            _close(d["data"], o.outputs.probs)


async def test_cross_encoder_score_and_rerank(cross_encoder_llm, client_for):
    from vllm_pool.engine.server import build_app

    query = "what is the capital of france"
    ref = [o.outputs.score for o in cross_encoder_llm.score(query, TINY, use_tqdm=False)]
    async with client_for(build_app(cross_encoder_llm)) as c:
        r = await c.post("/score", json={"text_1": query, "text_2": TINY})
        assert r.status_code == 200, r.text
        _close([d["score"] for d in r.json()["data"]], ref)
        r = await c.post("/rerank", json={"query": query, "documents": TINY})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [x["index"] for x in results] == sorted(range(3), key=lambda i: -ref[i])
        _close([x["relevance_score"] for x in results], sorted(ref, reverse=True))


def test_fast_json_response_parses_to_the_same_document_as_the_standard_encoder():
    import json

    from fastapi.responses import JSONResponse
    from vllm_pool.engine.server.responses import FastJSONResponse

    vectors = torch.randn(8, 384).tolist() + [[1e-7, -9.75e-05, 0.0, 1e300]]
    body = {"object": "list", "data": [{"index": i, "embedding": v} for i, v in enumerate(vectors)], "é": "ü"}
    fast = FastJSONResponse(body)
    assert fast.media_type == "application/json"
    assert json.loads(fast.body) == json.loads(JSONResponse(body).body) == body  # floats round-trip exactly


async def test_an_empty_text_is_embedded_as_offline(client, default_llm):
    """``""`` is [CLS] [SEP] on a BERT model: embedded as ``LLM.embed`` (and Sentence
    Transformers) embed it, not refused (blank pages from PDF loaders)."""
    r = await client.post("/v1/embeddings", json={"input": ["", "hello world"]})
    assert r.status_code == 200, r.text
    ref = default_llm.embed(["", "hello world"], use_tqdm=False)
    for d, o in zip(r.json()["data"], ref):
        _close(d["embedding"], o.outputs.embedding)
    r = await client.post("/rerank", json={"query": "q", "documents": ["a", ""]})
    assert r.status_code == 200, r.text  # a blank page is a document to rank (vLLM, CrossEncoder)
    ref = [o.outputs.score for o in default_llm.score("q", ["a", ""], use_tqdm=False)]
    got = sorted(r.json()["results"], key=lambda x: x["index"])
    np.testing.assert_allclose([x["relevance_score"] for x in got], ref, atol=1e-5)
