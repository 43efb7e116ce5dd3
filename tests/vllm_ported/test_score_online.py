"""Ported from vLLM ``tests/entrypoints/pooling/score/test_online_score.py``.

Adapted: BAAI/bge-reranker-v2-m3 -> the tiny ``bge_reranker`` (one-label XLM-RoBERTa
cross-encoder); BAAI/bge-base-en-v1.5 -> the tiny ``e5_small`` (a bi-encoder: cosine of
embeddings); the server process -> the app in process; fp32 instead of half; the reference is
Sentence Transformers' ``CrossEncoder.predict`` / cosine of ``SentenceTransformer.encode`` on
the same folder. Not ported: ``test_score_max_model_len`` (conform-long's truncation work)
and ``test_invocations`` (no ``/invocations`` route).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import tensor

MODELS = [
    {"name": "bge_reranker", "is_cross_encoder": True},
    {"name": "e5_small", "is_cross_encoder": False},
]


def run_transformers(hf_model, model, text_pairs):
    if model["is_cross_encoder"]:
        return hf_model.predict(text_pairs).tolist()
    hf_embeddings = [hf_model.encode(text_pair) for text_pair in text_pairs]
    return [F.cosine_similarity(tensor(pair[0]), tensor(pair[1]), dim=0) for pair in hf_embeddings]


@pytest.fixture(scope="class", params=MODELS, ids=lambda m: m["name"])
def model(request):
    return {**request.param, "folder": request.getfixturevalue(request.param["name"])}


@pytest.fixture(scope="class")
def llm(model: dict[str, Any]):
    from vllm_pool import LLM

    return LLM(str(model["folder"]), max_model_len=100)


@pytest.fixture(scope="class")
def runner(model: dict[str, Any]):
    from sentence_transformers import CrossEncoder, SentenceTransformer

    if model["is_cross_encoder"]:
        return CrossEncoder(str(model["folder"]), device="cpu")
    return SentenceTransformer(str(model["folder"]), device="cpu")


class TestModel:
    async def test_text_1_str_text_2_list(self, server, model: dict[str, Any], runner):
        text_1 = "What is the capital of France?"
        text_2 = ["The capital of Brazil is Brasilia.", "The capital of France is Paris."]

        score_response = await server.post("/score", json={"text_1": text_1, "text_2": text_2})
        score_response.raise_for_status()
        score = score_response.json()

        assert score["id"] is not None and score["id"].startswith("score-")
        assert score["data"] is not None
        assert len(score["data"]) == 2

        vllm_outputs = [d["score"] for d in score["data"]]
        text_pairs = [[text_1, text_2[0]], [text_1, text_2[1]]]
        hf_outputs = run_transformers(runner, model, text_pairs)
        for i in range(len(vllm_outputs)):
            assert float(hf_outputs[i]) == pytest.approx(vllm_outputs[i], rel=0.01)

    async def test_text_1_list_text_2_list(self, server, model: dict[str, Any], runner):
        text_1 = ["What is the capital of the United States?", "What is the capital of France?"]
        text_2 = ["The capital of Brazil is Brasilia.", "The capital of France is Paris."]

        score_response = await server.post("/score", json={"text_1": text_1, "text_2": text_2})
        score_response.raise_for_status()
        score = score_response.json()
        assert len(score["data"]) == 2

        vllm_outputs = [d["score"] for d in score["data"]]
        text_pairs = [[text_1[0], text_2[0]], [text_1[1], text_2[1]]]
        hf_outputs = run_transformers(runner, model, text_pairs)
        for i in range(len(vllm_outputs)):
            assert float(hf_outputs[i]) == pytest.approx(vllm_outputs[i], rel=0.01)

    async def test_text_1_str_text_2_str(self, server, model: dict[str, Any], runner):
        text_1 = "What is the capital of France?"
        text_2 = "The capital of France is Paris."

        score_response = await server.post("/score", json={"text_1": text_1, "text_2": text_2})
        score_response.raise_for_status()
        score = score_response.json()
        assert len(score["data"]) == 1

        vllm_outputs = [d["score"] for d in score["data"]]
        hf_outputs = run_transformers(runner, model, [[text_1, text_2]])
        assert float(hf_outputs[0]) == pytest.approx(vllm_outputs[0], rel=0.01)

    async def test_use_activation(self, server, model: dict[str, Any]):
        async def get_outputs(use_activation):
            text_1 = "What is the capital of France?"
            text_2 = "The capital of France is Paris."
            body = {"text_1": text_1, "text_2": text_2, "use_activation": use_activation}
            response = await server.post("/score", json=body)
            if response.status_code != 200:
                return response
            return torch.tensor([x["score"] for x in response.json()["data"]])

        if model["is_cross_encoder"]:
            default = await get_outputs(use_activation=None)
            w_activation = await get_outputs(use_activation=True)
            wo_activation = await get_outputs(use_activation=False)

            assert torch.allclose(default, w_activation, atol=1e-2), "Default should use activation."
            assert not torch.allclose(w_activation, wo_activation, atol=1e-2), (
                "wo_activation should not use activation."
            )
            assert torch.allclose(F.sigmoid(wo_activation), w_activation, atol=1e-2), (
                "w_activation should be close to activation(wo_activation)."
            )
        else:
            await get_outputs(use_activation=None)

            # The activation parameter only works for the is_cross_encoder model
            response = await get_outputs(use_activation=True)
            assert response.status_code == 400
