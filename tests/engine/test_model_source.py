"""Model resolution: local folders, the packaged default model, hub ids offline."""

from __future__ import annotations

import pytest
from vllm_pool.engine.model_source import DEFAULT_MODEL, resolve_model
from vllm_pool.engine.types import ModelNotFoundError


def test_default_id_resolves_to_packaged_copy(default_model_dir):
    assert resolve_model(DEFAULT_MODEL) == default_model_dir.resolve()


def test_missing_folder_names_the_path(tmp_path):
    from vllm_pool import LLM

    missing = tmp_path / "nope"
    with pytest.raises(ModelNotFoundError, match=f"Model folder not found: {missing}"):
        LLM(str(missing))


def test_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match=f"No weights .* in model folder {tmp_path}"):
        resolve_model(tmp_path)


def test_offline_hub_id_names_the_id(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match='Model "BAAI/bge-reranker-v2-m3" is not a local folder'):
        resolve_model("BAAI/bge-reranker-v2-m3")


def test_wrong_model_type():
    with pytest.raises(TypeError, match="model must be a folder path or a hub id"):
        resolve_model(123)  # type: ignore[arg-type]
