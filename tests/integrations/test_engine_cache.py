"""`clear_engine_cache` forgets the shared engines and the ColBERT encoders that hold them."""

from __future__ import annotations

from vllm_pool import DEFAULT_MODEL


def test_clear_engine_cache_drops_the_colbert_encoders(monkeypatch):
    from vllm_pool.integrations import EngineOptions, _colbert, _engines, clear_engine_cache, get_engine

    # private caches for this test, so the session's shared engines stay as they are
    monkeypatch.setattr(_engines, "_cache", {})
    monkeypatch.setattr(_engines, "_key_locks", {})
    monkeypatch.setattr(_colbert, "_encoders", {})
    options = EngineOptions.make(DEFAULT_MODEL, engine_kwargs={"max_num_seqs": 7})
    config = _colbert.resolve_config(options, {})
    old_llm = get_engine(options)
    old = _colbert.get_encoder(options, config)
    assert old.encoder.llm is old_llm and _colbert.get_encoder(options, config) is old

    clear_engine_cache()
    new = _colbert.get_encoder(options, config)
    assert new is not old and new.encoder.llm is get_engine(options) is not old_llm
