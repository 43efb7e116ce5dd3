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


def _save_st(folder, modules):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(1)
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


def test_dense_with_residual_matches_sentence_transformers(tmp_path, tiny_bert):
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    from vllm_pool import LLM

    dense = Dense(32, 32, activation_function=torch.nn.Tanh(), use_residual=True)
    folder = _save_st(
        tmp_path / "residual", [Transformer(str(tiny_bert)), Pooling(32, "mean"), dense, Normalize()]
    )
    llm = LLM(str(folder))
    assert llm.model_config.st.dense[0].residual
    np.testing.assert_allclose(_vectors(llm), _st(folder).encode(TEXTS), rtol=1e-4, atol=1e-5)


def test_modules_the_engine_cannot_follow_are_refused_by_name(tmp_path, tiny_bert):
    import torch
    from sentence_transformers.sentence_transformer.modules import (
        Dense,
        LayerNorm,
        Normalize,
        Pooling,
        Transformer,
    )

    from vllm_pool import LLM

    def base():
        return [Transformer(str(tiny_bert)), Pooling(32, "mean")]

    cases = {
        "layer_norm": (base() + [LayerNorm(32), Normalize()], "module 'LayerNorm' is not supported"),
        "norm_then_dense": (
            base() + [Normalize(), Dense(32, 16, activation_function=torch.nn.Tanh())],
            "a Dense module after Normalize",
        ),
        "token_dense": (
            [
                Transformer(str(tiny_bert)),
                Dense(32, 16, module_input_name="token_embeddings", module_output_name="token_embeddings"),
                Pooling(16, "mean"),
            ],
            "a Dense module before Pooling",
        ),
    }
    for name, (modules, message) in cases.items():
        folder = _save_st(tmp_path / name, modules)
        with pytest.raises(ValueError, match=message) as info:
            LLM(str(folder))
        assert str(folder) in str(info.value)


def test_legacy_cross_encoder_activation_from_config(tmp_path, tiny_dir):
    import json

    from sentence_transformers import CrossEncoder

    from vllm_pool import LLM

    folder = tiny_models.bert(
        tiny_dir / "bert_ce_legacy_act", cls="BertForSequenceClassification", num_labels=1
    )
    config = json.loads((folder / "config.json").read_text())
    config["sbert_ce_default_activation_function"] = "torch.nn.modules.linear.Identity"  # ST < 4
    (folder / "config.json").write_text(json.dumps(config))
    pairs = [("what is a list", "a list is a mutable sequence"), ("what is a list", "dogs bark")]
    ref = CrossEncoder(str(folder), device="cpu").predict(pairs)
    ours = [
        o.outputs.score for o in LLM(str(folder)).score(pairs[0][0], [b for _, b in pairs], use_tqdm=False)
    ]
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
