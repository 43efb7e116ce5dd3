"""Ported from vLLM ``tests/entrypoints/pooling/pooling/test_online.py``.

Adapted: internlm/internlm2-1_8b-reward -> a tiny one-label Qwen2 sequence classifier (a
reward model: ``/pooling`` without ``task`` runs vLLM's default, here ``token_classify``, one
reward per token); the server process -> the app in process; ``input_tokens`` read from the
tiny tokenizer; the spec's error body (``message`` at the top level). Not ported: chat
``messages``, ``embed_dtype`` / ``endianness`` / ``bytes`` encodings, ``/invocations`` (not
in this server).
"""

from __future__ import annotations

import base64

import numpy as np
import pytest
import tiny_models
import torch

MODEL_NAME = "internlm/internlm2-1_8b-reward"
input_text = "The chef prepared a delicious meal."


@pytest.fixture(scope="module")
def llm(tiny_dir):
    from vllm_pool import LLM

    folder = tiny_dir / "ported_reward"
    if not (folder / "config.json").exists():
        tiny_models.qwen2(folder, cls="Qwen2ForSequenceClassification", num_labels=1)
    return LLM(str(folder), runner="pooling", max_model_len=128)


@pytest.fixture(scope="module")
def input_tokens(llm):
    return llm.get_tokenizer()(input_text)["input_ids"]


def check_embeddings_close(embeddings_0_lst, embeddings_1_lst, tol=1e-3):
    assert len(embeddings_0_lst) == len(embeddings_1_lst)
    for e0, e1 in zip(embeddings_0_lst, embeddings_1_lst):
        torch.testing.assert_close(torch.tensor(e0), torch.tensor(e1), rtol=tol, atol=tol)


async def test_basic(server, input_tokens):
    response = await server.get("/v1/models")
    assert response.json()["data"][0]["id"] == MODEL_NAME
    response = await server.post("/tokenize", json={"model": MODEL_NAME, "prompt": input_text})
    assert response.json()["tokens"] == input_tokens


async def test_completion_request(server, llm, input_tokens):
    for value in (input_text, input_tokens):
        body = {"model": MODEL_NAME, "input": value, "encoding_format": "float"}
        response = await server.post("/pooling", json=body)
        response.raise_for_status()
        poolings = response.json()

        assert poolings["id"] is not None
        assert len(poolings["data"]) == 1
        assert len(poolings["data"][0]["data"]) == len(input_tokens)
        assert poolings["usage"]["completion_tokens"] == 0
        assert poolings["usage"]["prompt_tokens"] == len(input_tokens)
        assert poolings["usage"]["total_tokens"] == len(input_tokens)
    (reward,) = llm.reward(input_text, use_tqdm=False)  # the default task is token_classify
    check_embeddings_close([poolings["data"][0]["data"]], [reward.outputs.data.tolist()], tol=1e-5)


async def test_completion_request_batched(server, input_tokens):
    N = 10
    for value in ([input_text] * N, [input_tokens] * N):
        body = {"model": MODEL_NAME, "input": value, "encoding_format": "float"}
        response = await server.post("/pooling", json=body)
        response.raise_for_status()
        poolings = response.json()

        assert poolings["id"] is not None
        assert len(poolings["data"]) == N
        assert len(poolings["data"][0]["data"]) == len(input_tokens)
        assert poolings["usage"]["completion_tokens"] == 0
        assert poolings["usage"]["prompt_tokens"] == len(input_tokens) * N
        assert poolings["usage"]["total_tokens"] == len(input_tokens) * N


async def test_batch_base64_pooling(server):
    input_texts = [
        "Hello my name is",
        "The best thing about vLLM is that it supports many different models",
    ]

    body = {"input": input_texts, "model": MODEL_NAME, "encoding_format": "float"}
    float_response = await server.post("/pooling", json=body)
    float_response.raise_for_status()
    float_data = [np.array(d["data"]).squeeze(-1).tolist() for d in float_response.json()["data"]]

    body = {"input": input_texts, "model": MODEL_NAME, "encoding_format": "base64"}
    base64_response = await server.post("/pooling", json=body)
    base64_response.raise_for_status()
    decoded = [
        np.frombuffer(base64.b64decode(d["data"]), dtype="float32").tolist()
        for d in base64_response.json()["data"]
    ]
    check_embeddings_close(float_data, decoded)

    # Default response is float
    default_response = await server.post("/pooling", json={"input": input_texts, "model": MODEL_NAME})
    default_response.raise_for_status()
    default_data = [np.array(d["data"]).squeeze(-1).tolist() for d in default_response.json()["data"]]
    check_embeddings_close(float_data, default_data)


@pytest.mark.parametrize("param_name", ["encoding_format"])
async def test_params_not_supported(server, param_name: str):
    body = {"model": MODEL_NAME, "input": input_text, "encoding_format": "base64"}
    body[param_name] = f"bad_{param_name}"
    response = await server.post("/pooling", json=body)
    assert response.status_code == 400
    assert "literal_error" in response.json()["message"]
    assert f"bad_{param_name}" in response.json()["message"]
