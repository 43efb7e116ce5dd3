"""Ported from vLLM ``tests/entrypoints/pooling/embed/test_online.py``.

Adapted: intfloat/multilingual-e5-small -> the tiny ``e5_small``; the ``RemoteOpenAIServer``
process -> the same app in process, with the official ``openai`` client over an ASGI
transport (vLLM's calls ``client.embeddings.create(...)`` unchanged); ``input_tokens`` and the
embedding size read from the tiny model; fp32 instead of bf16; ``run_embedding_correctness_test``
against Sentence Transformers on the same folder. Not ported: chat ``messages``,
``/invocations``, ``embed_dtype`` / ``endianness`` / bytes encodings, and
``test_truncate_prompt_tokens`` (conform-long's truncation tests).
"""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest
import torch
import torch.nn.functional as F

MODEL_NAME = "intfloat/multilingual-e5-small"
input_text = "The best thing about vLLM is that it supports many different models"


@pytest.fixture(scope="module")
def llm(e5_small):
    from vllm_pool import LLM

    return LLM(str(e5_small), runner="pooling", max_model_len=128)


@pytest.fixture()
async def client(llm):
    from vllm_pool.engine.server import ServerConfig, build_app

    app = build_app(llm, ServerConfig(served_model_names=[MODEL_NAME]))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        async with openai.AsyncOpenAI(api_key="none", base_url="http://testserver/v1", http_client=http) as c:
            yield c


@pytest.fixture(scope="module")
def hf_model(e5_small):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(e5_small), device="cpu")


@pytest.fixture(scope="module")
def input_tokens(llm):
    return llm.get_tokenizer()(input_text)["input_ids"]


@pytest.fixture(scope="module")
def embedding_size(llm):
    return llm.embedding_dim


def run_embedding_correctness_test(hf_model, inputs, vllm_outputs, dimensions=None):
    hf_outputs = torch.tensor(hf_model.encode(inputs))
    if dimensions:
        hf_outputs = F.normalize(hf_outputs[:, :dimensions], dim=-1)
    torch.testing.assert_close(torch.tensor(vllm_outputs), hf_outputs, rtol=1e-4, atol=1e-5)


async def test_basic(client: openai.AsyncOpenAI):
    models = await client.models.list()
    served_model = models.data[0]
    assert served_model.id == MODEL_NAME


async def test_completion_request(client: openai.AsyncOpenAI, hf_model, input_tokens, embedding_size):
    for value in (input_text, input_tokens):
        embeddings = await client.embeddings.create(model=MODEL_NAME, input=value, encoding_format="float")

        assert embeddings.id is not None and embeddings.id.startswith("embd-")
        assert len(embeddings.data) == 1
        assert len(embeddings.data[0].embedding) == embedding_size
        assert embeddings.usage.prompt_tokens == len(input_tokens)
        assert embeddings.usage.total_tokens == len(input_tokens)

        vllm_outputs = [d.embedding for d in embeddings.data]
        run_embedding_correctness_test(hf_model, [input_text], vllm_outputs)


async def test_completion_request_batched(client: openai.AsyncOpenAI, hf_model, input_tokens, embedding_size):
    N = 10
    input_texts = [input_text] * N
    for value in (input_texts, [input_tokens] * N):
        embeddings = await client.embeddings.create(model=MODEL_NAME, input=value, encoding_format="float")

        assert embeddings.id is not None
        assert len(embeddings.data) == N
        assert len(embeddings.data[0].embedding) == embedding_size
        assert embeddings.usage.prompt_tokens == len(input_tokens) * N
        assert embeddings.usage.total_tokens == len(input_tokens) * N

        vllm_outputs = [d.embedding for d in embeddings.data]
        run_embedding_correctness_test(hf_model, input_texts, vllm_outputs)


async def test_base64_embedding(hf_model, client: openai.AsyncOpenAI):
    input_texts = [
        "Hello my name is",
        "The best thing about vLLM is that it supports many different models",
    ]

    responses_float = await client.embeddings.create(
        input=input_texts, model=MODEL_NAME, encoding_format="float"
    )
    float_data = [d.embedding for d in responses_float.data]
    run_embedding_correctness_test(hf_model, input_texts, float_data)

    responses_base64 = await client.embeddings.create(
        input=input_texts, model=MODEL_NAME, encoding_format="base64"
    )
    base64_data = []
    for data in responses_base64.data:
        base64_data.append(np.frombuffer(base64.b64decode(data.embedding), dtype="float32").tolist())
    run_embedding_correctness_test(hf_model, input_texts, base64_data)

    # Default response is float32 decoded from base64 by OpenAI Client
    responses_default = await client.embeddings.create(input=input_texts, model=MODEL_NAME)
    default_data = [d.embedding for d in responses_default.data]
    run_embedding_correctness_test(hf_model, input_texts, default_data)


async def test_embedding_dimensions_not_supported(client: openai.AsyncOpenAI):
    """vLLM's docs example: ``dimensions`` on a model without Matryoshka is a 400 with its text."""
    with pytest.raises(openai.BadRequestError, match="does not support matryoshka representation"):
        await client.embeddings.create(input=input_text, model=MODEL_NAME, dimensions=8)
