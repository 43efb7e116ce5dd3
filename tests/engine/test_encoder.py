"""The Rust-backend encoder against the tokenizer's own __call__, and the cheap per-call setup."""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import AutoTokenizer
from vllm_pool.engine.encoder import FastEncoder
from vllm_pool.engine.llm import default_max_num_seqs
from vllm_pool.engine.params import normalize_params, resolve_params

from vllm_pool import LLM, PoolingParams

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Retrieval augmented generation keeps answers grounded in documents " * 12,
    "  spaces   and\ttabs\nand new lines  ",
    "Ünïcödé façade — naïve café, 東京, emoji 🙂",
    "x",
    "UPPER lower MiXeD 12345 3.14159 e-mail@example.com",
]


@pytest.fixture(params=["default", "bert", "xlmr", "qwen2"])
def tokenizer(request, default_model_dir, tiny_bert, tiny_xlmr, tiny_qwen2):
    folder = {"default": default_model_dir, "bert": tiny_bert, "xlmr": tiny_xlmr, "qwen2": tiny_qwen2}
    return AutoTokenizer.from_pretrained(folder[request.param])


@pytest.mark.parametrize("limit", [3, 16, 512])
def test_fast_encoder_gives_the_tokenizers_ids(tokenizer, limit):
    enc = FastEncoder(tokenizer)
    assert enc.available
    want = tokenizer(TEXTS, truncation=True, max_length=limit, add_special_tokens=True)["input_ids"]
    assert enc(TEXTS, limit) == want


def test_left_truncation_is_followed(default_model_dir):
    tok = AutoTokenizer.from_pretrained(default_model_dir, truncation_side="left")
    enc = FastEncoder(tok)
    assert enc.available
    assert enc(TEXTS, 8) == tok(TEXTS, truncation=True, max_length=8)["input_ids"]


def test_the_shared_tokenizer_is_left_as_it_was(default_model_dir):
    tok = AutoTokenizer.from_pretrained(default_model_dir)
    enc = FastEncoder(tok)  # its probe calls the tokenizer, which sets the backend itself
    before = (tok.backend_tokenizer.truncation, tok.backend_tokenizer.padding)
    enc(TEXTS, 5)
    enc(TEXTS, 300)
    assert (tok.backend_tokenizer.truncation, tok.backend_tokenizer.padding) == before


def test_a_tokenizer_that_differs_from_its_backend_keeps_its_own_call(default_model_dir):
    class Reversing:  # a tokenizer class whose __call__ adds its own processing
        def __init__(self, inner):
            self.inner, self.is_fast = inner, True
            self.backend_tokenizer = inner.backend_tokenizer

        def __call__(self, texts, **kw):
            return {"input_ids": [ids[::-1] for ids in self.inner(texts, **kw)["input_ids"]]}

    enc = FastEncoder(Reversing(AutoTokenizer.from_pretrained(default_model_dir)))
    assert not enc.available


def test_slow_tokenizers_are_not_used():
    class Slow:
        is_fast = False

    assert not FastEncoder(Slow()).available


def test_concurrent_limits_do_not_mix(default_model_dir):
    tok = AutoTokenizer.from_pretrained(default_model_dir)
    enc = FastEncoder(tok)
    texts = TEXTS * 50
    want = {n: tok(texts, truncation=True, max_length=n)["input_ids"] for n in (4, 9, 300)}
    got: dict[int, list] = {}

    def work(n: int) -> None:
        for _ in range(5):
            got[n] = enc(texts, n)

    threads = [threading.Thread(target=work, args=(n,)) for n in want]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want


def test_engine_requests_match_the_tokenizer(default_llm):
    texts = TEXTS + [{"prompt": "a dict prompt"}]
    reqs = default_llm.make_requests(texts, "embed", truncate_prompt_tokens=10)
    plain = [t if isinstance(t, str) else t["prompt"] for t in texts]
    want = default_llm.get_tokenizer()(plain, truncation=True, max_length=10)["input_ids"]
    assert [r.prompt_token_ids for r in reqs] == want


def test_params_are_resolved_once_per_object():
    calls = []

    class Pooler:  # counts its calls (a real pooler also keeps its results by value)
        def resolve(self, p: PoolingParams, truncate: int | None = None) -> PoolingParams:
            calls.append((p, truncate))
            return p.clone(normalize=True, truncate_prompt_tokens=truncate)

    shared = normalize_params(None, 1000)
    out = resolve_params(Pooler(), shared, truncate_prompt_tokens=7)
    assert len(calls) == 1 and calls[0][1] == 7 and out[0].truncate_prompt_tokens == 7
    assert all(p is out[0] for p in out) and out[0].normalize is True
    a, b = PoolingParams(dimensions=4), PoolingParams(dimensions=8)
    out = resolve_params(Pooler(), [a, b, a, b])
    assert [p.dimensions for p in out] == [4, 8, 4, 8] and len(calls) == 3


def test_resolution_errors_still_name_the_problem(default_llm):
    with pytest.raises(ValueError, match="does not support matryoshka"):
        default_llm.embed(["a", "b"], pooling_params=PoolingParams(dimensions=8))
    with pytest.raises(ValueError, match="is greater than max_model_len"):
        default_llm.embed(["a", "b"], truncate_prompt_tokens=100_000)
    assert len(default_llm.embed(["still usable"])) == 1


def test_default_prompts_per_batch_follow_the_device(default_llm):
    assert default_max_num_seqs(torch.device("cpu")) == 64
    assert default_max_num_seqs(torch.device("cuda", 0)) == 1024
    assert default_llm.max_num_seqs == 64
    from vllm_pool.engine.llm import first_tokenize_chunk

    assert first_tokenize_chunk(torch.device("cuda", 0)) == 256  # the device starts early
    assert first_tokenize_chunk(torch.device("cpu")) is None and default_llm.first_tokenize_chunk is None


def test_max_num_seqs_must_still_be_positive(tiny_bert):
    with pytest.raises(ValueError, match="max_num_seqs must be a positive integer, got 0"):
        LLM(str(tiny_bert), max_num_seqs=0)


@pytest.mark.parametrize("limit", [6, 24, 512])
def test_pairs_give_the_tokenizers_ids_and_segments(tokenizer, limit):
    enc = FastEncoder(tokenizer)
    assert enc.pairs_available
    pairs = [("q", t) for t in TEXTS]
    got = enc.pairs(pairs, limit)
    for (ids, types), (a, b) in zip(got, pairs):
        want = tokenizer(a, b, truncation="only_second", max_length=limit)
        assert ids == want["input_ids"]
        assert types == want.get("token_type_ids", types)


def test_a_first_text_over_the_limit_falls_back_to_the_tokenizer(default_llm):
    long_query = "retrieval " * 40
    enc = default_llm.input_processor.encoder
    assert enc.pairs([(long_query, "short passage")], 16) is None
    texts_1, texts_2 = ["q", long_query, "another q"], ["passage " * 30, "short passage", "p"]
    params = [
        PoolingParams(truncate_prompt_tokens=16),
        PoolingParams(truncate_prompt_tokens=16),
        PoolingParams(),
    ]
    got = default_llm.input_processor.pairs(texts_1, texts_2, params)
    tok = default_llm.get_tokenizer()
    want = [
        tok("q", "passage " * 30, truncation="only_second", max_length=16),
        tok(long_query, "short passage", truncation="longest_first", max_length=16),
        tok("another q", "p", truncation="only_second", max_length=default_llm.model_config.max_model_len),
    ]
    assert [r.prompt_token_ids for r in got] == [w["input_ids"] for w in want]
    assert [r.index for r in got] == [0, 1, 2]
