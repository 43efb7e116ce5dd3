"""vLLM's truncation tests, ported: over-long prompts are rejected unless ``truncate_prompt_tokens``.

Each test names the vLLM test it comes from. Common adaptations: the hub model
``sentence-transformers/all-MiniLM-L12-v2`` (``--max-model-len 128``) becomes the packaged
all-MiniLM-L6-v2 loaded with ``max_model_len=128`` (the same tokenizer, so the same token
counts); cross-encoder and classifier hub models become tiny random BERT classifiers;
``RemoteOpenAIServer`` becomes the in-process ASGI app (the same JSON over HTTP semantics);
vLLM's newer ``tokenization_kwargs=dict(truncate_prompt_tokens=...)`` is our (and vLLM's
earlier) ``truncate_prompt_tokens=`` keyword.
"""

from __future__ import annotations

import pytest
import tiny_models
from ported_server import error_object, served_client

MAX_MODEL_LEN = 128

INPUT = """Immerse yourself in the enchanting chronicle of calculus, a
    mathematical domain that has radically transformed our comprehension of
    change and motion. Despite its roots in ancient civilizations, the
    formal birth of calculus predominantly occurred in the 17th century,
    primarily under the influential guidance of Sir Isaac Newton and Gottfried
    Wilhelm Leibniz. The earliest traces of calculus concepts are found in
    ancient Greek mathematics,most notably in the works of Eudoxus and
    Archimedes, around 300 BCE. They utilized the 'method of exhaustion'-a
    technique for computing areas and volumes through the use of finite sums.
    This methodology laid crucial foundational work for integral calculus.
    In the 17th century, both Newton and Leibniz independently pioneered
    calculus, each contributing unique perspectives that would shape this new
    field."""


@pytest.fixture(scope="module")
def llm128(default_model_dir):
    from vllm_pool import LLM

    return LLM(str(default_model_dir), max_model_len=MAX_MODEL_LEN)


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory):
    from vllm_pool import LLM

    folder = tiny_models.bert(
        tmp_path_factory.mktemp("ported") / "ce", cls="BertForSequenceClassification", num_labels=1
    )
    return LLM(str(folder), max_model_len=32)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    from vllm_pool import LLM

    folder = tiny_models.bert(
        tmp_path_factory.mktemp("ported") / "clf", cls="BertForSequenceClassification", num_labels=2
    )
    return LLM(str(folder))


def test_input_is_longer_than_the_limit(llm128):
    """Guard for the tests below: the text is over 128 tokens with this tokenizer."""
    assert len(llm128.get_tokenizer()(INPUT)["input_ids"]) > MAX_MODEL_LEN


# -- offline: tests/models/language/pooling/test_truncation_control.py ---------------------
def test_smaller_truncation_size(llm128):
    """vLLM ``test_truncation_control.py::test_smaller_truncation_size`` (keyword adapted)."""
    truncate_prompt_tokens = 10
    vllm_output = llm128.embed(INPUT, truncate_prompt_tokens=truncate_prompt_tokens)
    prompt_tokens = vllm_output[0].prompt_token_ids
    assert len(prompt_tokens) == truncate_prompt_tokens


def test_max_truncation_size(llm128):
    """vLLM ``test_truncation_control.py::test_max_truncation_size``: -1 is the context length."""
    vllm_output = llm128.embed(INPUT, truncate_prompt_tokens=-1)
    prompt_tokens = vllm_output[0].prompt_token_ids
    assert len(prompt_tokens) == MAX_MODEL_LEN


def test_bigger_truncation_size(llm128):
    """vLLM ``test_truncation_control.py::test_bigger_truncation_size`` (vLLM raises its
    ``VLLMValidationError``, a ``ValueError``; the text is vLLM's offline one)."""
    pattern = r"truncate_prompt_tokens value \(129\) is greater than max_model_len \(128\)"
    with pytest.raises(ValueError, match=pattern):
        llm128.embed(INPUT, truncate_prompt_tokens=MAX_MODEL_LEN + 1)


@pytest.mark.parametrize("verb", ["embed", "token_embed", "token_ids"])
def test_over_long_prompt_raises_offline(llm128, verb):
    """vLLM's processor check (``_validate_model_input``): a prompt over ``max_model_len`` without
    ``truncate_prompt_tokens`` is a ``ValueError`` (text or token-id prompt, any task)."""
    n = MAX_MODEL_LEN + 1 if verb == "token_ids" else len(llm128.get_tokenizer()(INPUT)["input_ids"])
    pattern = rf"The decoder prompt \(length {n}\) is longer than the maximum model length of 128"
    with pytest.raises(ValueError, match=pattern):
        if verb == "embed":
            llm128.embed(["short", INPUT], use_tqdm=False)
        elif verb == "token_embed":
            llm128.encode(INPUT, pooling_task="token_embed", use_tqdm=False)
        else:
            ids = [101] * (MAX_MODEL_LEN + 1)
            llm128.encode({"prompt_token_ids": ids}, pooling_task="embed", use_tqdm=False)
    assert len(llm128.embed("still usable", use_tqdm=False)) == 1


def test_over_long_pair_raises_offline(cross_encoder):
    """vLLM ``LLM.score`` on a cross-encoder: an over-long pair is the same ``ValueError``;
    with ``truncate_prompt_tokens`` the pair is cut to it."""
    long = "the cat and the dog " * 20
    with pytest.raises(ValueError, match=r"is longer than the maximum model length of 32.*pair 1"):
        cross_encoder.score("a query", ["short", long], use_tqdm=False)
    outs = cross_encoder.score("a query", ["short", long], use_tqdm=False, truncate_prompt_tokens=-1)
    assert [len(o.prompt_token_ids) <= 32 for o in outs] == [True, True]
    assert len(outs[1].prompt_token_ids) == 32


def test_classify_and_reward_raise_offline(classifier):
    """The same rule for ``LLM.classify`` / ``LLM.reward`` (vLLM's processor applies to all)."""
    long = "hello " * 200
    with pytest.raises(ValueError, match="longer than the maximum model length of 128"):
        classifier.classify(long, use_tqdm=False)
    with pytest.raises(ValueError, match="longer than the maximum model length of 128"):
        classifier.reward(long, use_tqdm=False)
    (out,) = classifier.classify(long, use_tqdm=False, truncate_prompt_tokens=5)
    assert len(out.prompt_token_ids) == 5


# -- online: tests/entrypoints/pooling/openai/test_truncation.py ----------------------------
async def test_online_smaller_truncation_size(llm128):
    """vLLM ``openai/test_truncation.py::test_smaller_truncation_size``."""
    truncation_size = 10
    kwargs = {"model": "m", "input": INPUT, "truncate_prompt_tokens": truncation_size}
    async with served_client(llm128) as client:
        response = (await client.post("/v1/embeddings", json=kwargs)).json()
    assert response["usage"]["prompt_tokens"] == truncation_size


async def test_online_zero_truncation_size(llm128):
    """vLLM ``openai/test_truncation.py::test_zero_truncation_size`` expects 0 prompt tokens
    (an empty prompt). Adapted: an empty prompt has nothing to pool, so ``0`` is a 400 that
    names the field, as any bad value is here (vLLM's current renderer also gives no usable
    output for it)."""
    kwargs = {"model": "m", "input": INPUT, "truncate_prompt_tokens": 0}
    async with served_client(llm128) as client:
        response = await client.post("/v1/embeddings", json=kwargs)
    assert response.status_code == 400
    assert "truncate_prompt_tokens" in error_object(response)["message"]


async def test_online_bigger_truncation_size(llm128):
    """vLLM ``openai/test_truncation.py::test_bigger_truncation_size`` (exact message)."""
    kwargs = {"model": "m", "input": INPUT, "truncate_prompt_tokens": MAX_MODEL_LEN + 1}
    async with served_client(llm128) as client:
        response = await client.post("/v1/embeddings", json=kwargs)
    assert response.status_code == 400
    error_details = error_object(response)
    assert error_details["type"] == "BadRequestError"
    expected_message = (
        "truncate_prompt_tokens value is greater than max_model_len."
        " Please, select a smaller truncation size."
    )
    assert error_details["message"] == expected_message


async def test_online_max_truncation_size(llm128):
    """vLLM ``openai/test_truncation.py::test_max_truncation_size``."""
    kwargs = {"model": "m", "input": INPUT, "truncate_prompt_tokens": -1}
    async with served_client(llm128) as client:
        response = (await client.post("/v1/embeddings", json=kwargs)).json()
    assert response["usage"]["prompt_tokens"] == MAX_MODEL_LEN


@pytest.mark.parametrize(
    ("path", "field", "operation"),
    [("/v1/embeddings", "input", "embedding generation"), ("/pooling", "input", "embedding generation")],
)
async def test_online_over_long_input_is_a_400(llm128, path, field, operation):
    """vLLM ``serving_engine._validate_input``: an over-long input without
    ``truncate_prompt_tokens`` answers 400 naming the token count and the limit."""
    n = len(llm128.get_tokenizer()(INPUT)["input_ids"])
    async with served_client(llm128) as client:
        response = await client.post(path, json={"model": "m", field: ["short", INPUT]})
        assert response.status_code == 400
        message = error_object(response)["message"]
        assert message.startswith(
            f"This model's maximum context length is 128 tokens. However, you requested {n} tokens "
            f"in the input for {operation}. Please reduce the length of the input."
        )
        assert "prompts[1]" in message
        ok = await client.post(path, json={"model": "m", field: "still usable"})
        assert ok.status_code == 200


# -- online classify: tests/entrypoints/pooling/classify/test_online.py ----------------------
async def test_online_classify_truncate_prompt_tokens(classifier):
    """vLLM ``classify/test_online.py::test_truncate_prompt_tokens`` (tiny 2-label BERT)."""
    long_text = "hello " * 600
    async with served_client(classifier) as client:
        response = await client.post(
            "/classify", json={"model": "m", "input": long_text, "truncate_prompt_tokens": 5}
        )
        assert response.status_code == 200
        output = response.json()
        assert len(output["data"]) == 1
        assert output["data"][0]["index"] == 0
        assert len(output["data"][0]["probs"]) == 2
        assert output["usage"]["prompt_tokens"] == 5
        assert output["usage"]["total_tokens"] == 5
        # without truncation the same input is vLLM's 400 for classification
        response = await client.post("/classify", json={"model": "m", "input": long_text})
        assert response.status_code == 400
        assert (
            "tokens in the input for classification. Please reduce the length of the input."
            in (error_object(response)["message"])
        )


async def test_online_classify_invalid_truncate_prompt_tokenserror_object(classifier):
    """vLLM ``classify/test_online.py::test_invalid_truncate_prompt_tokens_error``."""
    async with served_client(classifier) as client:
        response = await client.post(
            "/classify", json={"model": "m", "input": "test", "truncate_prompt_tokens": 513}
        )
    assert response.status_code == 400
    assert "truncate_prompt_tokens" in error_object(response)["message"]


# -- online score / rerank: tests/entrypoints/pooling/{openai,score}/test_{score,rerank}.py ---
async def test_online_score_max_model_len(cross_encoder):
    """vLLM ``test_score.py::test_score_max_model_len`` (tiny cross-encoder, max_model_len 32)."""
    text_1 = "What is the capital of France?" * 20
    text_2 = ["The capital of Brazil is Brasilia.", "The capital of France is Paris."]
    async with served_client(cross_encoder) as client:
        response = await client.post("/score", json={"model": "m", "text_1": text_1, "text_2": text_2})
        assert response.status_code == 400
        assert "Please reduce the length of the input." in response.text
        assert "tokens in the input for score." in response.text
        response = await client.post(
            "/score", json={"model": "m", "text_1": text_1, "text_2": text_2, "truncate_prompt_tokens": 33}
        )
        assert response.status_code == 400
        assert "Please, select a smaller truncation size." in response.text
        response = await client.post(
            "/score", json={"model": "m", "text_1": text_1, "text_2": text_2, "truncate_prompt_tokens": -1}
        )
        assert response.status_code == 200


async def test_online_rerank_max_model_len(cross_encoder):
    """vLLM ``test_rerank.py::test_rerank_max_model_len``."""
    query = "What is the capital of France?" * 100
    documents = ["The capital of Brazil is Brasilia.", "The capital of France is Paris."]
    async with served_client(cross_encoder) as client:
        response = await client.post("/rerank", json={"model": "m", "query": query, "documents": documents})
    assert response.status_code == 400
    # Assert just a small fragments of the response
    assert "Please reduce the length of the input." in response.text
    # vLLM names the operation by request type: a RerankRequest is "embedding generation"
    assert "tokens in the input for embedding generation." in response.text


async def test_online_bi_encoder_score_over_long_says_score(llm128):
    """vLLM names the operation by endpoint: an embedding model's ``/score`` says "score",
    its ``/rerank`` "embedding generation" (the engine embeds both sides alike)."""
    async with served_client(llm128) as client:
        for path in ("/score", "/v1/score"):
            response = await client.post(
                path, json={"model": "m", "text_1": "query", "text_2": ["ok", INPUT]}
            )
            assert response.status_code == 400
            assert "tokens in the input for score. Please reduce the length of the input." in response.text
        response = await client.post(
            "/rerank", json={"model": "m", "query": "query", "documents": ["ok", INPUT]}
        )
        assert response.status_code == 400
        assert "tokens in the input for embedding generation." in response.text
