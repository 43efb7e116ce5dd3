"""Long-text embedding by chunks (``enable_chunked_processing`` / ``max_embed_len``), as vLLM does.

The parity tests recompute vLLM's rule by hand with transformers on the same weights: the
full tokenization cut into chunks of ``max_model_len`` ids, each chunk run alone and pooled
by the model's pooling type and normalization, the chunk vectors averaged with their token
counts as weights (not normalized again). The ported tests name the vLLM test they come
from; vLLM's hub model (intfloat/multilingual-e5-small, ``--max-model-len 512``) becomes a
tiny random BERT with ``max_model_len=32``, so "1,500 / 2,500 words" become texts of a few
hundred tokens, and ``RemoteOpenAIServer`` becomes the in-process ASGI app.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import tiny_models
import torch
import torch.nn.functional as F
from ported_server import error_object, served_client

LIMIT = 32
CHUNKED = {"pooling_type": "MEAN", "enable_chunked_processing": True, "max_embed_len": 10000}


def _words(n: int, seed: int = 0) -> str:
    """``n`` words of the tiny vocabulary (each one token), in random order."""
    rng = random.Random(seed)
    return " ".join(rng.choice(tiny_models.WORDS) for _ in range(n))


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return tiny_models.bert(tmp_path_factory.mktemp("chunked") / "bert")


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return tiny_models.qwen2(tmp_path_factory.mktemp("chunked") / "qwen2")


@pytest.fixture(scope="module")
def chunked_llm(bert_dir):
    from vllm_pool import LLM

    return LLM(str(bert_dir), max_model_len=LIMIT, pooler_config=CHUNKED)


def _by_hand(folder, text: str, pooling: str, normalize: bool, is_decoder: bool = False) -> torch.Tensor:
    """vLLM's chunked embedding, computed with transformers."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    ids = tok(text)["input_ids"]
    assert len(ids) > 2 * LIMIT
    total = torch.zeros(model.config.hidden_size)
    for start in range(0, len(ids), LIMIT):
        chunk = ids[start : start + LIMIT]
        ones = torch.ones(1, len(chunk), dtype=torch.long)
        kwargs = {"input_ids": torch.tensor([chunk]), "attention_mask": ones}
        if not is_decoder:
            kwargs["token_type_ids"] = torch.zeros(1, len(chunk), dtype=torch.long)
        with torch.no_grad():
            hidden = model(**kwargs).last_hidden_state[0]  # [chunk, hidden]
        vec = {"MEAN": hidden.mean(0), "CLS": hidden[0], "LAST": hidden[-1]}[pooling]
        if normalize:
            vec = F.normalize(vec, dim=-1)
        total += vec * len(chunk)
    return total / len(ids)


@pytest.mark.parametrize("n_words", [3 * LIMIT - 2, 3 * LIMIT + 5])
@pytest.mark.parametrize("normalize", [True, False])
def test_mean_pooled_3x_input_matches_the_computation_by_hand(chunked_llm, bert_dir, n_words, normalize):
    """The issue's parity test: a MEAN-pooled model, an input of 3x the limit (exactly 3
    chunks, and 3 chunks plus a short one whose weight is small), offline."""
    from vllm_pool import PoolingParams

    text = _words(n_words)
    (out,) = chunked_llm.embed(text, PoolingParams(normalize=normalize), use_tqdm=False)
    ref = _by_hand(bert_dir, text, "MEAN", normalize)
    assert len(out.prompt_token_ids) == n_words + 2  # the whole prompt, [CLS] ... [SEP]
    torch.testing.assert_close(out.outputs.data.float(), ref, rtol=1e-5, atol=1e-6)
    if normalize:  # each chunk is normalized, their weighted mean is not normalized again
        assert float(out.outputs.data.norm()) < 1.0


@pytest.mark.parametrize(("model", "pooling"), [("bert", "CLS"), ("qwen2", "LAST")])
def test_cls_and_last_pool_inside_each_chunk(bert_dir, qwen_dir, model, pooling):
    """CLS / LAST read the first / last token of each chunk (the model's own pooling inside a
    chunk), then the same weighted mean: vLLM's rule for every pooling type."""
    from vllm_pool import LLM

    folder = bert_dir if model == "bert" else qwen_dir
    cfg = {"enable_chunked_processing": True, "max_embed_len": 1000}
    llm = LLM(str(folder), max_model_len=LIMIT, pooler_config=cfg)
    text = _words(3 * LIMIT + 5, seed=1)
    (out,) = llm.embed(text, use_tqdm=False)
    ref = _by_hand(folder, text, pooling, True, is_decoder=model == "qwen2")
    torch.testing.assert_close(out.outputs.data.float(), ref, rtol=1e-5, atol=1e-6)


def test_short_inputs_and_batches_are_unchanged(chunked_llm, bert_dir):
    """A prompt within the limit is one chunk: the same vector as without chunking; a batch of
    long and short prompts gives each prompt's own result, in order (alone = in a batch)."""
    from vllm_pool import LLM

    plain = LLM(str(bert_dir), max_model_len=LIMIT, pooler_config={"pooling_type": "MEAN"})
    texts = ["hello world", _words(100, 2), "a", _words(70, 3)]
    batch = chunked_llm.embed(texts, use_tqdm=False)
    alone = [chunked_llm.embed(t, use_tqdm=False)[0] for t in texts]
    for a, b in zip(batch, alone):
        torch.testing.assert_close(a.outputs.data, b.outputs.data, rtol=1e-5, atol=1e-6)
        assert a.prompt_token_ids == b.prompt_token_ids
    for i in (0, 2):
        (ref,) = plain.embed(texts[i], use_tqdm=False)
        torch.testing.assert_close(batch[i].outputs.data, ref.outputs.data, rtol=1e-5, atol=1e-6)
    assert len(batch[1].prompt_token_ids) == 102


def test_encode_embed_score_and_large_inputs_chunk_too(chunked_llm):
    """``encode(pooling_task="embed")``, the bi-encoder ``score`` and inputs tokenized in
    slices (over ``tokenize_chunk`` prompts) go through the same chunking."""
    long = _words(90, 4)
    (a,) = chunked_llm.embed(long, use_tqdm=False)
    (b,) = chunked_llm.encode(long, pooling_task="embed", use_tqdm=False)
    torch.testing.assert_close(a.outputs.data, b.outputs.data)
    (s,) = chunked_llm.score(long, "hello world", use_tqdm=False)
    (h,) = chunked_llm.embed("hello world", use_tqdm=False)
    cos = F.cosine_similarity(a.outputs.data.float(), h.outputs.data.float(), dim=0)
    assert s.outputs.score == pytest.approx(float(cos), abs=1e-5)
    texts = [_words(40 + 7 * i, i) for i in range(6)]
    whole = chunked_llm.embed(texts, use_tqdm=False)
    before = chunked_llm.tokenize_chunk
    chunked_llm.tokenize_chunk = 2
    try:
        sliced = chunked_llm.embed(texts, use_tqdm=False)
    finally:
        chunked_llm.tokenize_chunk = before
    for x, y in zip(whole, sliced):
        torch.testing.assert_close(x.outputs.data, y.outputs.data, rtol=1e-5, atol=1e-6)


def test_other_tasks_keep_the_model_limit(chunked_llm):
    """Only ``embed`` is chunked: ``token_embed`` still rejects a prompt over ``max_model_len``."""
    with pytest.raises(ValueError, match="longer than the maximum model length of 32"):
        chunked_llm.encode(_words(60), pooling_task="token_embed", use_tqdm=False)


# -- tests/entrypoints/pooling/test_embed_max_embed_len.py (unit tests of the input cap) ------
def test_non_chunked_max_embed_len_caps_input(bert_dir):
    """vLLM ``test_non_chunked_max_embed_len_caps_input``: with ``max_embed_len`` under
    ``max_model_len`` and chunking off, the cap is ``max_embed_len`` (adapted: vLLM checks the
    tokenizer parameters; we check the error on a prompt between the two)."""
    from vllm_pool import LLM

    llm = LLM(str(bert_dir), max_model_len=128, pooler_config={"max_embed_len": 64})
    pattern = "maximum embedding input length is 64 tokens. However, you requested 82"
    with pytest.raises(ValueError, match=pattern):
        llm.embed(_words(80), use_tqdm=False)
    assert len(llm.embed(_words(60), use_tqdm=False)[0].prompt_token_ids) == 62


def test_chunked_max_embed_len_caps_input(bert_dir):
    """vLLM ``test_chunked_max_embed_len_caps_input``."""
    from vllm_pool import LLM

    cfg = {"enable_chunked_processing": True, "max_embed_len": 64}
    llm = LLM(str(bert_dir), max_model_len=LIMIT, pooler_config=cfg)
    with pytest.raises(ValueError, match="maximum embedding input length is 64 tokens"):
        llm.embed(_words(80), use_tqdm=False)
    assert len(llm.embed(_words(60), use_tqdm=False)[0].prompt_token_ids) == 62


def test_no_max_embed_len_falls_back_to_model_len(bert_dir):
    """vLLM ``test_no_max_embed_len_falls_back_to_model_len``: without ``max_embed_len`` the cap
    is ``max_model_len``, chunking or not."""
    from vllm_pool import LLM

    llm = LLM(str(bert_dir), max_model_len=LIMIT, pooler_config={"enable_chunked_processing": True})
    with pytest.raises(ValueError, match="longer than the maximum model length of 32"):
        llm.embed(_words(40), use_tqdm=False)


@pytest.mark.parametrize(
    ("cfg", "error", "text"),
    [
        ({"max_embed_len": 0}, ValueError, "max_embed_len'] must be a positive integer"),
        ({"max_embed_len": "1000"}, ValueError, "max_embed_len'] must be a positive integer"),
        ({"enable_chunked_processing": "yes"}, TypeError, "chunked_processing'] must be true or false"),
    ],
)
def test_bad_pooler_config_values_fail_before_loading(cfg, error, text):
    from vllm_pool import EngineArgs

    with pytest.raises(error, match=text):
        EngineArgs("any/model", pooler_config=cfg)


def test_cli_pooler_config_carries_the_chunking_fields():
    from vllm_pool.cli import build_parser, llm_kwargs

    args = build_parser().parse_args(["serve", "m", "--pooler-config", _json(CHUNKED)])
    assert llm_kwargs(args)["pooler_config"] == CHUNKED


def _json(value) -> str:
    import json

    return json.dumps(value)


# -- online: tests/entrypoints/pooling/embed/test_online_long_text.py -------------------------
LONG_TEXT_1500_WORDS = _words(150, 10)  # ~5 chunks of 32
LONG_TEXT_2500_WORDS = _words(250, 11)  # ~8 chunks


async def test_long_text_embedding_1500_chars(chunked_llm):
    """vLLM ``test_long_text_embedding_1500_chars`` (sizes scaled to the tiny model's 32-token limit)."""
    async with served_client(chunked_llm) as client:
        response = await client.post(
            "/v1/embeddings", json={"model": "m", "input": [LONG_TEXT_1500_WORDS], "encoding_format": "float"}
        )
    assert response.status_code == 200
    embeddings = response.json()
    assert embeddings["id"] is not None
    assert len(embeddings["data"]) == 1
    assert len(embeddings["data"][0]["embedding"]) == 32  # the tiny model's dimension
    assert embeddings["usage"]["completion_tokens"] == 0
    assert embeddings["usage"]["prompt_tokens"] == 152 > LIMIT  # the whole prompt, not a chunk
    assert embeddings["usage"]["total_tokens"] == embeddings["usage"]["prompt_tokens"]
    embedding_vector = embeddings["data"][0]["embedding"]
    assert all(isinstance(x, float) for x in embedding_vector)
    assert not all(x == 0 for x in embedding_vector)
    (offline,) = chunked_llm.embed(LONG_TEXT_1500_WORDS, use_tqdm=False)
    np.testing.assert_allclose(embedding_vector, offline.outputs.embedding, rtol=1e-5, atol=1e-6)


async def test_batch_long_text_embedding(chunked_llm):
    """vLLM ``test_batch_long_text_embedding``."""
    input_texts = [LONG_TEXT_1500_WORDS, LONG_TEXT_2500_WORDS, "This is a short text test."]
    async with served_client(chunked_llm) as client:
        response = await client.post(
            "/v1/embeddings", json={"model": "m", "input": input_texts, "encoding_format": "float"}
        )
    embeddings = response.json()
    assert len(embeddings["data"]) == 3
    for i, embedding_data in enumerate(embeddings["data"]):
        assert len(embedding_data["embedding"]) == 32
        assert embedding_data["index"] == i
        assert not all(x == 0 for x in embedding_data["embedding"])
    assert embeddings["usage"]["completion_tokens"] == 0
    assert embeddings["usage"]["prompt_tokens"] > 2 * 150
    assert embeddings["usage"]["total_tokens"] == embeddings["usage"]["prompt_tokens"]


async def test_chunked_vs_normal_consistency(chunked_llm):
    """vLLM ``test_chunked_vs_normal_consistency``: a short text is one chunk."""
    short_text = "the capital of france is paris and a city on a river"
    async with served_client(chunked_llm) as client:
        embeddings = (await client.post("/v1/embeddings", json={"model": "m", "input": [short_text]})).json()
    assert len(embeddings["data"]) == 1
    assert len(embeddings["data"][0]["embedding"]) == 32
    assert embeddings["usage"]["prompt_tokens"] < LIMIT
    assert embeddings["usage"]["total_tokens"] == embeddings["usage"]["prompt_tokens"]


async def test_chunked_processing_response_format(chunked_llm):
    """vLLM ``test_chunked_processing_response_format``: the norm of the aggregate is "reasonable"
    (each chunk is normalized; their weighted mean is not normalized again)."""
    async with served_client(chunked_llm) as client:
        body = {"model": "m", "input": [LONG_TEXT_1500_WORDS]}
        embeddings = (await client.post("/v1/embeddings", json=body)).json()
    assert embeddings["data"][0]["object"] == "embedding"
    assert embeddings["data"][0]["index"] == 0
    vector_norm = math.sqrt(sum(x * x for x in embeddings["data"][0]["embedding"]))
    assert 0.8 < vector_norm < 1.2, f"Vector norm should be reasonable, actual: {vector_norm}"


async def test_online_max_embed_len_and_pooling_endpoint(bert_dir):
    """Over ``max_embed_len`` is vLLM's 400 text; ``/pooling`` with ``task=embed`` chunks as
    ``/v1/embeddings`` does."""
    from vllm_pool import LLM

    cfg = {"pooling_type": "MEAN", "enable_chunked_processing": True, "max_embed_len": 64}
    llm = LLM(str(bert_dir), max_model_len=LIMIT, pooler_config=cfg)
    async with served_client(llm) as client:
        response = await client.post("/v1/embeddings", json={"model": "m", "input": _words(80)})
        assert response.status_code == 400
        assert error_object(response)["message"].startswith(
            "This model's maximum embedding input length is 64 tokens. However, you requested 82 tokens "
            "in the input for embedding generation. Please reduce the length of the input."
        )
        text = _words(60, 5)
        pooled = (await client.post("/pooling", json={"model": "m", "input": text, "task": "embed"})).json()
    (offline,) = llm.embed(text, use_tqdm=False)
    np.testing.assert_allclose(pooled["data"][0]["data"], offline.outputs.embedding, rtol=1e-5, atol=1e-6)
    assert pooled["usage"]["prompt_tokens"] == 62
