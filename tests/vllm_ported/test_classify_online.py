"""Ported from vLLM ``tests/entrypoints/pooling/classify/test_online.py``.

Adapted: jason9693/Qwen2.5-1.5B-apeach -> the tiny ``apeach``; the ``RemoteOpenAIServer``
process -> the same app in process (``httpx`` over ASGI); ``input_tokens`` read from the
tiny tokenizer; error bodies are the spec's ``{"object": "error", "message", "type", ...}``
(newer vLLM nests them under ``"error"``). ``/score`` and ``/rerank`` on a two-label model
answer 400 with vLLM's "Score API is only enabled for num_labels == 1." (newer vLLM does not
register the routes: 404). Not ported: chat requests, ``/invocations``, ``add_special_tokens``
(not in this server), and ``test_truncate_prompt_tokens`` (conform-long's truncation tests).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

MODEL_NAME = "jason9693/Qwen2.5-1.5B-apeach"
input_text = "This product was excellent and exceeded my expectations"


@pytest.fixture(scope="module")
def llm(apeach):
    from vllm_pool import LLM

    return LLM(str(apeach))


@pytest.fixture(scope="module")
def input_tokens(llm):
    return llm.get_tokenizer()(input_text)["input_ids"]


async def test_basic(server, input_tokens):
    response = await server.get("/v1/models")
    served_model = response.json()["data"][0]["id"]
    assert served_model == MODEL_NAME

    response = await server.post("/tokenize", json={"model": MODEL_NAME, "prompt": input_text})
    assert response.json()["tokens"] == input_tokens


async def test_completion_request(server, input_tokens):
    for value in (input_text, input_tokens):
        response = await server.post("/classify", json={"model": MODEL_NAME, "input": value})
        response.raise_for_status()
        output = response.json()
        assert output["object"] == "list"
        assert output["model"] == MODEL_NAME
        assert output["id"].startswith("classify-")
        assert len(output["data"]) == 1
        assert "label" in output["data"][0] and "probs" in output["data"][0]


async def test_completion_request_batched(server, input_tokens):
    N = 10
    for value in ([input_text] * N, [input_tokens] * N):
        response = await server.post("/classify", json={"model": MODEL_NAME, "input": value})
        output = response.json()
        assert len(output["data"]) == N
        for i, item in enumerate(output["data"]):
            assert item["index"] == i
            assert len(item["probs"]) == item["num_classes"]
            assert item["label"] in ["Default", "Spoiled"]


async def test_empty_input_error(server, llm):
    """Adapted: vLLM refuses a prompt with no tokens, and Qwen2.5's tokenizer adds none to
    ``""``; the tiny tokenizer appends EOS, so ``""`` has a token here and is classified as
    offline (``LLM.classify``); the no-token prompt is sent as an empty token-id list."""
    for value in ([], [[]]):
        response = await server.post("/classify", json={"model": MODEL_NAME, "input": value})
        assert response.status_code == 400
        assert response.json()["object"] == "error"
    assert llm.get_tokenizer()("")["input_ids"]  # EOS
    response = await server.post("/classify", json={"model": MODEL_NAME, "input": ""})
    assert response.status_code == 200
    offline = llm.classify([""], use_tqdm=False)[0].outputs.probs
    assert response.json()["data"][0]["probs"] == pytest.approx(offline, abs=1e-5)


async def test_use_activation(server):
    async def get_outputs(use_activation):
        response = await server.post(
            "/classify", json={"model": MODEL_NAME, "input": input_text, "use_activation": use_activation}
        )
        outputs = response.json()
        return torch.tensor([x["probs"] for x in outputs["data"]])

    default = await get_outputs(use_activation=None)
    w_activation = await get_outputs(use_activation=True)
    wo_activation = await get_outputs(use_activation=False)

    assert torch.allclose(default, w_activation, atol=1e-2), "Default should use activation."
    assert not torch.allclose(w_activation, wo_activation, atol=1e-2), (
        "wo_activation should not use activation."
    )
    assert torch.allclose(F.softmax(wo_activation, dim=-1), w_activation, atol=1e-2), (
        "w_activation should be close to activation(wo_activation)."
    )


async def test_score(server):
    # score api is only enabled for num_labels == 1.
    body = {"model": MODEL_NAME, "queries": "ping", "documents": "pong"}
    response = await server.post("/score", json=body)
    assert response.status_code == 400
    assert response.json()["message"].startswith("Score API is only enabled for num_labels == 1.")


async def test_rerank(server):
    body = {"model": MODEL_NAME, "query": "ping", "documents": ["pong"]}
    response = await server.post("/rerank", json=body)
    assert response.status_code == 400
    assert response.json()["message"].startswith("Score API is only enabled for num_labels == 1.")


async def test_pooling_classify(server):
    body = {"model": MODEL_NAME, "input": input_text, "encoding_format": "float", "task": "classify"}
    response = await server.post("/pooling", json=body)
    poolings = response.json()
    assert len(poolings["data"]) == 1
    assert len(poolings["data"][0]["data"]) == 2


@pytest.mark.parametrize("task", ["embed", "token_embed", "plugin"])
async def test_pooling_not_supported(server, task: str):
    body = {"model": MODEL_NAME, "input": input_text, "encoding_format": "float", "task": task}
    response = await server.post("/pooling", json=body)
    assert response.json()["type"] == "BadRequestError"
    if task == "plugin":
        err_msg = "No IOProcessor plugin installed."
    else:
        err_msg = f"Task {task} is not supported, it must be one of"
    assert response.json()["message"].startswith(err_msg)
