"""Dropping the last reference to an engine frees its model at once, as ``del model`` does
for a Sentence Transformers model: no reference cycle keeps it for the next full GC pass
(on a GPU that pass may come much later, with the memory still held)."""

from __future__ import annotations

import gc
import weakref

import tiny_models

from vllm_pool import LLM


def _used(path) -> LLM:
    llm = LLM(str(path), max_num_batched_tokens=64)
    if "embed" in llm.get_supported_tasks():
        llm.embed(["hello world", "a b c"], use_tqdm=False)
        llm.encode(["x y"], pooling_task="token_embed", use_tqdm=False)
    else:
        llm.classify(["hello world", "a b c"], use_tqdm=False)
    llm.score("hello", ["world", "again"], use_tqdm=False)
    return llm


def test_dropped_engine_frees_its_model_without_gc(tiny_bert, tmp_path):
    cross_encoder = tmp_path / "cross"
    tiny_models.bert(cross_encoder, cls="BertForSequenceClassification", num_labels=1)
    for path in (tiny_bert, cross_encoder):
        _used(path)  # the first load in a process imports modules; their import frames may linger
        gc.collect()
        gc.disable()
        try:
            llm = _used(path)
            engine, model = weakref.ref(llm), weakref.ref(llm.runner.model)
            del llm
            assert engine() is None, "the LLM object is kept by a reference cycle"
            assert model() is None, "the model is kept by a reference cycle"
        finally:
            gc.enable()


def test_out_of_memory_callback_outlives_its_engine_quietly(tiny_bert):
    llm = _used(tiny_bert)
    callback = llm.runner.on_oom
    assert callback is not None
    callback(10_000)  # a batch of 10,000 tokens did not fit: the budget is lowered
    assert llm.max_num_batched_tokens == 64
    del llm
    gc.collect()
    callback(10_000)  # the engine is gone: nothing to lower, no error
