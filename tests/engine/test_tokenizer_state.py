"""The engine tokenizes as the model's tokenizer does whatever state that tokenizer is in:
``split_special_tokens`` (special-token strings typed in a text are split, as the tokenizer
and Sentence Transformers do), a ``truncation_side`` changed after the first call, a
lower-cased model's ``/tokenize``; and the ColBERT encoder shares the engine's tokenizer
under its lock (each call sets the tokenizer's truncation)."""

from __future__ import annotations

import json
import threading

import pytest
import tiny_models

from vllm_pool import LLM

TEXT = "hello [SEP] world [MASK] again"


def _ids(llm, text, **kwargs):
    return llm.make_requests([text], "embed", **kwargs)[0].prompt_token_ids


def test_split_special_tokens_is_honoured(tmp_path):
    folder = tiny_models.bert(tmp_path / "bert")
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["split_special_tokens"] = True
    config_file.write_text(json.dumps(config))
    llm = LLM(str(folder))
    tok = llm.get_tokenizer()
    want = tok(TEXT)["input_ids"]
    assert tok.sep_token_id not in want[1:-1]  # the tokenizer splits the typed "[SEP]"
    assert _ids(llm, TEXT) == want
    assert _ids(llm, TEXT, truncate_prompt_tokens=5) == tok(TEXT, truncation=True, max_length=5)["input_ids"]


def test_a_truncation_side_changed_later_is_used(tiny_bert):
    llm = LLM(str(tiny_bert))
    tok = llm.get_tokenizer()
    text = "hello world what is the capital of france"
    for side in ("right", "left", "right"):
        tok.truncation_side = side
        for limit in (5, 6, 5):
            want = tok(text, truncation=True, max_length=limit)["input_ids"]
            assert _ids(llm, text, truncate_prompt_tokens=limit) == want, (side, limit)
            ids = tok(text)["input_ids"]  # token prompts: a slice on the same side (vLLM)
            cut = ids[-limit:] if side == "left" else ids[:limit]
            assert (
                llm.make_requests([{"prompt_token_ids": ids}], "embed", truncate_prompt_tokens=limit)[
                    0
                ].prompt_token_ids
                == cut
            )


async def test_tokenize_lowercases_for_a_do_lower_case_model(tmp_path):
    pytest.importorskip("fastapi")
    import httpx
    from transformers import BertTokenizerFast
    from vllm_pool.engine.server import build_app

    base = tiny_models.bert(tmp_path / "bert")
    vocab = {t: i for i, t in enumerate(tiny_models.wordpiece_vocab())}
    BertTokenizerFast(vocab=vocab, do_lower_case=False, model_max_length=128).save_pretrained(base)  # cased
    folder = tiny_models.sentence_transformer(tmp_path / "st", base)
    config_file = folder / "sentence_bert_config.json"  # as Sentence Transformers < 6 saved it
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "do_lower_case": True}))
    llm = LLM(str(folder))
    transport = httpx.ASGITransport(app=build_app(llm))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for text in ("Hello World", "THE CAT"):
            r = await client.post("/tokenize", json={"prompt": text})
            assert r.status_code == 200
            assert r.json()["tokens"] == _ids(llm, text) == llm.get_tokenizer()(text.lower())["input_ids"]


def test_colbert_encoder_tokenizes_under_the_engine_lock(tiny_bert):
    from vllm_pool.retrievers import ColBERTEncoder, EngineTokenEncoder

    llm = LLM(str(tiny_bert))
    encoder = ColBERTEncoder(EngineTokenEncoder(llm))
    want = encoder.document_token_ids(["hello world what is the capital of france"])
    got = []
    worker = threading.Thread(
        target=lambda: got.append(encoder.document_token_ids(["hello world what is the capital of france"]))
    )
    with llm.input_processor.lock:  # as the engine's fallback path while it cuts a pair
        worker.start()
        worker.join(0.5)
        waited = worker.is_alive()
    worker.join()
    assert waited, "the ColBERT encoder called the shared tokenizer without its lock"
    assert got == [want]


def test_instruction_lengths_are_cached_within_a_bound(tiny_bert):
    llm = LLM(str(tiny_bert))
    processor = llm.input_processor
    for i in range(3000):  # distinct instructions, as a server's clients may send
        assert processor.instruction_len(f"query {i}: ") >= 1
    assert len(processor._instruction_lens) <= 1024
    assert processor.instruction_len("query 7: ") == processor.instruction_len("query 7: ")
