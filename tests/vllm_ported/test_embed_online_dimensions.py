"""Ported from vLLM ``tests/entrypoints/pooling/embed/test_online_dimensions.py``.

Adapted: intfloat/multilingual-e5-small -> the tiny ``e5_small`` (not Matryoshka);
Snowflake/snowflake-arctic-embed-m-v1.5 with ``matryoshka_dimensions=[256]`` -> the tiny
``arctic_matryoshka`` with ``[16]`` (``hf_overrides``, as vLLM's ``--hf_overrides``); the
server process -> the app in process; the OpenAI client's ``BadRequestError`` -> a 400;
fp32 instead of bf16; the reference is Sentence Transformers on the same folder
(``run_embedding_correctness_test``: slice to ``dimensions``, then normalize).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F


@dataclass
class EmbedModelInfo:
    fixture: str
    is_matryoshka: bool = False
    matryoshka_dimensions: list[int] | None = None


MODELS = [
    EmbedModelInfo("e5_small", is_matryoshka=False),
    EmbedModelInfo("arctic_matryoshka", is_matryoshka=True, matryoshka_dimensions=[16]),
]

input_texts = [
    "The chef prepared a delicious meal.",
]


@pytest.fixture(scope="module", params=MODELS, ids=lambda m: m.fixture)
def model_info(request):
    return request.param


@pytest.fixture(scope="module")
def folder(model_info, request):
    return request.getfixturevalue(model_info.fixture)


@pytest.fixture(scope="module")
def llm(model_info, folder):
    from vllm_pool import LLM

    overrides = None
    if model_info.is_matryoshka:  # Manually enable Matryoshka Embeddings
        overrides = {"matryoshka_dimensions": model_info.matryoshka_dimensions}
    return LLM(str(folder), runner="pooling", max_model_len=64, hf_overrides=overrides)


@pytest.fixture(scope="module")
def hf_model(folder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


def run_embedding_correctness_test(hf_model, prompts, vllm_outputs, dimensions):
    hf_outputs = torch.tensor(hf_model.encode(prompts, normalize_embeddings=False))
    if dimensions:
        hf_outputs = hf_outputs[:, :dimensions]
    hf_outputs = F.normalize(hf_outputs, dim=-1)
    torch.testing.assert_close(torch.tensor(vllm_outputs), hf_outputs, rtol=1e-4, atol=1e-5)


async def test_matryoshka(model_info: EmbedModelInfo, llm, hf_model, client_for):
    from vllm_pool.engine.server import build_app

    async with client_for(build_app(llm)) as client:

        async def make_request_and_correctness_test(dimensions):
            prompts = input_texts * 3
            body = {"model": llm.model_name, "input": prompts, "encoding_format": "float"}
            if dimensions is not None:
                body["dimensions"] = dimensions
            response = await client.post("/v1/embeddings", json=body)
            if response.status_code == 400:
                raise ValueError(response.json()["message"])
            embeddings = response.json()

            assert embeddings["id"] is not None
            assert len(embeddings["data"]) == 3
            assert len(embeddings["data"][0]["embedding"]) > 0
            assert embeddings["usage"]["completion_tokens"] == 0
            assert embeddings["usage"]["prompt_tokens"] > 0
            assert embeddings["usage"]["total_tokens"] > 0

            if dimensions is not None:
                assert len(embeddings["data"][0]["embedding"]) == dimensions

            vllm_outputs = [d["embedding"] for d in embeddings["data"]]
            run_embedding_correctness_test(hf_model, prompts, vllm_outputs, dimensions)

        if model_info.is_matryoshka:
            valid_dimensions: list[int | None] = [None]
            if model_info.matryoshka_dimensions is not None:
                valid_dimensions += model_info.matryoshka_dimensions[:2]

            for dimensions in valid_dimensions:
                await make_request_and_correctness_test(dimensions)

            invalid_dimensions: list[int | None] = [-1]
            if model_info.matryoshka_dimensions is not None:
                assert 5 not in model_info.matryoshka_dimensions
                invalid_dimensions.append(5)

            for dimensions in invalid_dimensions:
                # vLLM: a model with a dimension list answers "only supports [...]", -1 included
                with pytest.raises(ValueError, match=r"only supports \[16\] matryoshka dimensions"):
                    await make_request_and_correctness_test(dimensions)

        else:
            for dimensions in [None]:
                await make_request_and_correctness_test(dimensions)

            for dimensions in [-1, 16]:
                with pytest.raises(ValueError, match="does not support matryoshka representation"):
                    await make_request_and_correctness_test(dimensions)
