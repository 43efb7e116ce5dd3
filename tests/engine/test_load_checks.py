"""Load-time checks: weights missing from a checkpoint, hub repos with only *.bin weights, and
model folders without a tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from vllm_pool.engine.types import ModelNotFoundError

TOKENIZER_NAMES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _drop_weights(folder: Path, prefix: str) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    kept = {k: v for k, v in state.items() if not k.startswith(prefix)}
    assert len(kept) < len(state), f"no weight starts with {prefix!r}"
    save_file(kept, folder / "model.safetensors", metadata={"format": "pt"})


def _embed(folder: Path) -> torch.Tensor:
    from vllm_pool import LLM

    llm = LLM(str(folder), device="cpu")
    return torch.stack([o.outputs.data for o in llm.embed(["hello world", "the cat"], use_tqdm=False)])


# --- weights missing from the checkpoint -------------------------------------------------------


def test_classify_on_a_model_without_classifier_is_an_error(tiny_bert):
    from vllm_pool import LLM

    with pytest.raises(ValueError, match="classifier.weight") as info:
        LLM(str(tiny_bert), device="cpu", convert="classify")
    message = str(info.value)
    assert str(tiny_bert) in message
    assert "ForSequenceClassification" in message and "hf_overrides" in message


def test_missing_encoder_weights_are_an_error_with_a_count(tiny_bert, tmp_path):
    from vllm_pool import LLM

    folder = _copy(tiny_bert, tmp_path / "no_layer0")
    _drop_weights(folder, "encoder.layer.0.")
    with pytest.raises(ValueError, match=r"encoder\.layer\.0\..* and \d+ more") as info:
        LLM(str(folder), device="cpu")
    assert str(folder) in str(info.value)
    assert "classification head" not in str(info.value)


def test_base_model_saved_without_its_pooler_loads(tiny_bert, tmp_path):
    folder = _copy(tiny_bert, tmp_path / "no_pooler")
    _drop_weights(folder, "pooler.")
    torch.testing.assert_close(_embed(folder), _embed(tiny_bert))


# --- hub repos whose only weights are *.bin ----------------------------------------------------


def _fake_hub(monkeypatch, remote: Path, snapshot: Path) -> list[list[str]]:
    """Stand in for ``huggingface_hub.snapshot_download`` over the local folder ``remote``,
    filtering by ``allow_patterns`` as the Hub does; return the patterns of each call."""
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    calls: list[list[str]] = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None, local_files_only=False, **kw):
        calls.append(list(allow_patterns or []))
        files = [str(f.relative_to(remote)) for f in remote.rglob("*") if f.is_file()]
        for name in filter_repo_objects(files, allow_patterns=allow_patterns):
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(remote / name, snapshot / name)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def test_hub_repo_with_only_bin_weights_downloads_them(tiny_bert, tmp_path, monkeypatch):
    from safetensors.torch import load_file
    from vllm_pool.engine.model_source import resolve_model

    remote = _copy(tiny_bert, tmp_path / "remote")
    torch.save(load_file(remote / "model.safetensors"), remote / "pytorch_model.bin")
    (remote / "model.safetensors").unlink()
    _fake_hub(monkeypatch, remote, tmp_path / "snapshot")
    folder = resolve_model("some-org/bin-only-model")
    assert (folder / "pytorch_model.bin").is_file()
    torch.testing.assert_close(_embed(folder), _embed(tiny_bert))


def test_hub_repo_with_safetensors_skips_bin_weights(tiny_bert, tmp_path, monkeypatch):
    from safetensors.torch import load_file
    from vllm_pool.engine.model_source import resolve_model

    remote = _copy(tiny_bert, tmp_path / "remote")
    torch.save(load_file(remote / "model.safetensors"), remote / "pytorch_model.bin")
    calls = _fake_hub(monkeypatch, remote, tmp_path / "snapshot")
    folder = resolve_model("some-org/both-formats")
    assert (folder / "model.safetensors").is_file()
    assert not (folder / "pytorch_model.bin").exists()
    assert len(calls) == 1


# --- model folders without a tokenizer ---------------------------------------------------------


def test_folder_without_tokenizer_files_is_an_error(tiny_bert, tmp_path):
    from vllm_pool import LLM

    folder = tmp_path / "no_tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_bert / name, folder / name)
    with pytest.raises(ModelNotFoundError, match=f"No tokenizer in model folder {folder}") as info:
        LLM(str(folder), device="cpu")
    assert "tokenizer.json" in str(info.value) and "vocab.txt" in str(info.value)


def test_sentence_transformers_subfolder_without_tokenizer_is_an_error(tiny_bert, tmp_path):
    from vllm_pool import LLM

    folder = tmp_path / "st_sub"
    sub = folder / "0_Transformer"
    shutil.copytree(tiny_bert, sub)
    for name in TOKENIZER_NAMES:
        (sub / name).unlink(missing_ok=True)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True})
    )
    modules = [
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelNotFoundError, match=f"No tokenizer in model folder {sub}"):
        LLM(str(folder), device="cpu")


def test_tokenizer_config_without_vocabulary_is_an_error(tiny_bert, tmp_path):
    from vllm_pool import LLM

    folder = _copy(tiny_bert, tmp_path / "config_only")
    for name in ("tokenizer.json", "vocab.txt"):
        (folder / name).unlink()
    with pytest.raises(ModelNotFoundError, match="has no vocabulary"):
        LLM(str(folder), device="cpu")


def test_default_model_still_loads(default_model_dir):
    from vllm_pool.engine.loader import load_tokenizer

    assert len(load_tokenizer(default_model_dir, trust_remote_code=False)) > 30000
    assert _embed(default_model_dir).shape == (2, 384)
