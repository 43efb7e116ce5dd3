"""Sentence Transformers folders: Pooling mode, Dense with activation, Normalize, max_seq_length."""

from __future__ import annotations

import numpy as np
import pytest
import tiny_models
from tiny_models import TEXTS


@pytest.fixture(scope="module")
def st_folder(tiny_dir, tiny_bert):
    return tiny_models.sentence_transformer(
        tiny_dir / "st_cls_dense", tiny_bert, pooling="cls", dense_out=16, max_seq_length=12
    )


@pytest.fixture(scope="module")
def st_mean_folder(tiny_dir, tiny_bert):
    return tiny_models.sentence_transformer(
        tiny_dir / "st_mean_raw", tiny_bert, pooling="mean", dense_out=None, normalize=False
    )


def _st(folder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


def _vectors(llm):
    outs = llm.embed(TEXTS, use_tqdm=False, truncate_prompt_tokens=-1)  # ST cuts TEXTS[5] to max_seq_length
    return np.array([o.outputs.embedding for o in outs])


def test_dense_and_normalize_from_modules_json(st_folder):
    from vllm_pool import LLM

    llm = LLM(str(st_folder))
    st = llm.model_config.st
    assert st is not None and st.pooling_type == "CLS" and st.normalize and len(st.dense) == 1
    assert llm.embedding_dim == 16
    ours = _vectors(llm)
    ref = _st(st_folder).encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_max_seq_length_is_the_limit(st_folder):
    from vllm_pool import LLM

    llm = LLM(str(st_folder))
    assert llm.model_config.max_model_len == _st(st_folder).max_seq_length == 12
    with pytest.raises(ValueError, match="longer than the maximum model length of 12"):
        llm.embed(TEXTS[5], use_tqdm=False)
    (out,) = llm.embed(TEXTS[5], use_tqdm=False, truncate_prompt_tokens=-1)
    assert len(out.prompt_token_ids) == 12


def test_mean_pooling_without_normalize(st_mean_folder):
    from vllm_pool import LLM

    llm = LLM(str(st_mean_folder))
    ours = _vectors(llm)
    ref = _st(st_mean_folder).encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.linalg.norm(ours, axis=1), 1.0)


def test_pooler_config_overrides_st(st_mean_folder, tiny_bert):
    from vllm_pool import LLM

    llm = LLM(str(st_mean_folder), pooler_config={"pooling_type": "CLS", "normalize": True})
    cls_llm = LLM(str(tiny_bert))  # plain BERT folder: CLS + normalize
    a = _vectors(llm)
    b = _vectors(cls_llm)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_legacy_pooling_flags(tmp_path):
    from vllm_pool.engine.st_config import _pooling_mode

    assert _pooling_mode({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}, tmp_path) == (
        "MEAN",
        True,
    )
    with pytest.raises(ValueError, match="pooling mode 'max' is not supported"):
        _pooling_mode({"pooling_mode_max_tokens": True}, tmp_path)


def test_dense_activation_must_be_torch_nn(tmp_path, st_folder):
    import json
    import shutil

    from vllm_pool import LLM

    bad = tmp_path / "bad"
    shutil.copytree(st_folder, bad)
    cfg_file = bad / "2_Dense" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["activation_function"] = "os.system"
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="not a torch.nn module"):
        LLM(str(bad))
