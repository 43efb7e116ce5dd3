"""Matryoshka ``dimensions``: slice then normalize, and the spec's error texts."""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn.functional as F


@pytest.fixture(scope="module")
def matryoshka_llm(default_model_dir):
    from vllm_pool import LLM

    return LLM(str(default_model_dir), hf_overrides={"is_matryoshka": True})


def test_no_matryoshka_error_text(default_llm):
    from vllm_pool import PoolingParams

    msg = (
        'Model "sentence-transformers/all-MiniLM-L6-v2" does not support matryoshka '
        "representation, changing output dimensions will lead to poor results."
    )
    with pytest.raises(ValueError) as e:
        default_llm.embed("x", PoolingParams(dimensions=32), use_tqdm=False)
    assert str(e.value) == msg


def test_slice_then_normalize(matryoshka_llm, st_model):
    from vllm_pool import PoolingParams

    texts = ["Follow the white rabbit.", "Matryoshka dolls nest inside each other."]
    outs = matryoshka_llm.embed(texts, PoolingParams(dimensions=32), use_tqdm=False)
    ref = st_model.encode(texts, convert_to_tensor=True, normalize_embeddings=False)
    # the folder's Normalize module runs before a truncation in ST, so recompute: raw mean, slice, normalize
    raw = np.array(
        [
            o.outputs.data.numpy()
            for o in matryoshka_llm.encode(
                texts, PoolingParams(normalize=False), pooling_task="embed", use_tqdm=False
            )
        ]
    )
    expected = F.normalize(__import__("torch").as_tensor(raw[:, :32]), dim=-1).numpy()
    ours = np.array([o.outputs.embedding for o in outs])
    assert ours.shape == (2, 32)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    # and it matches ST's truncate_dim on its (normalized) vectors, renormalized
    st_cut = F.normalize(ref[:, :32], dim=-1).numpy()
    assert ((ours * st_cut).sum(1)).min() >= 0.99999


def test_only_listed_dimensions(default_model_dir):
    from vllm_pool import LLM, PoolingParams

    llm = LLM(str(default_model_dir), hf_overrides={"matryoshka_dimensions": [64, 128]})
    (out,) = llm.embed("x", PoolingParams(dimensions=64), use_tqdm=False)
    assert len(out.outputs.embedding) == 64
    with pytest.raises(ValueError) as e:
        llm.embed("x", PoolingParams(dimensions=32), use_tqdm=False)
    assert str(e.value) == (
        f'Model "{default_model_dir}" only supports [64, 128] matryoshka dimensions, '
        "use other output dimensions will lead to poor results."
    )


@pytest.mark.parametrize("dims", [0, -5])
def test_dimensions_must_be_positive(matryoshka_llm, dims):
    from vllm_pool import PoolingParams

    with pytest.raises(ValueError, match="^Dimensions must be greater than 0$"):
        matryoshka_llm.embed("x", PoolingParams(dimensions=dims), use_tqdm=False)


def test_dimensions_larger_than_model(matryoshka_llm):
    from vllm_pool import PoolingParams

    with pytest.raises(ValueError, match="larger than the model's embedding size 384"):
        matryoshka_llm.embed("x", PoolingParams(dimensions=1000), use_tqdm=False)
    (out,) = matryoshka_llm.embed("x", use_tqdm=False)
    assert len(out.outputs.embedding) == 384


def test_token_embed_dimensions(matryoshka_llm):
    from vllm_pool import PoolingParams

    (out,) = matryoshka_llm.encode(
        "hello world", PoolingParams(dimensions=16), pooling_task="token_embed", use_tqdm=False
    )
    assert out.outputs.data.shape == (4, 16)
    np.testing.assert_allclose(out.outputs.data.norm(dim=-1).numpy(), 1.0, atol=1e-5)


def test_default_dimensions_from_pooler_config(default_model_dir):
    from vllm_pool import LLM

    llm = LLM(str(default_model_dir), hf_overrides={"is_matryoshka": True}, pooler_config={"dimensions": 48})
    (out,) = llm.embed("x", use_tqdm=False)
    assert len(out.outputs.embedding) == 48


@pytest.fixture(scope="module")
def cut_folder(tmp_path_factory, default_model_dir):
    """The default model saved by Sentence Transformers with ``truncate_dim=64``."""
    from sentence_transformers import SentenceTransformer

    folder = tmp_path_factory.mktemp("cut64")
    SentenceTransformer(str(default_model_dir), device="cpu", truncate_dim=64).save(str(folder))
    return folder


def test_saved_truncate_dim_as_sentence_transformers(cut_folder):
    """A folder saved with ``truncate_dim`` gives ST's cut embeddings (renormalized, as vLLM's
    ``dimensions``); ``token_embed`` stays whole as ST's token embeddings; a request may cut further."""
    from sentence_transformers import SentenceTransformer

    from vllm_pool import LLM, PoolingParams

    st = SentenceTransformer(str(cut_folder), device="cpu")
    assert st.truncate_dim == 64  # the reference reads it back
    texts = ["Follow the white rabbit.", "Matryoshka dolls nest inside each other.", "x"]
    ref = F.normalize(st.encode(texts, convert_to_tensor=True), dim=-1).numpy()
    llm = LLM(str(cut_folder))
    ours = np.array([o.outputs.embedding for o in llm.embed(texts, use_tqdm=False)])
    assert ours.shape == ref.shape == (3, 64)
    assert (ours * ref).sum(1).min() >= 0.99999
    (tok,) = llm.encode(texts[:1], pooling_task="token_embed", use_tqdm=False)
    st_tokens = st.encode(texts[:1], output_value="token_embeddings")[0]
    assert tok.outputs.data.shape == st_tokens.shape  # [tokens, 384]
    (small,) = llm.embed("x", PoolingParams(dimensions=32), use_tqdm=False)
    assert len(small.outputs.embedding) == 32


def test_saved_truncate_dim_reaches_the_integrations(cut_folder):
    from vllm_pool.integrations.langchain import VllmPoolEmbeddings

    assert len(VllmPoolEmbeddings(model=str(cut_folder)).embed_query("hello")) == 64


def test_saved_truncate_dim_checked(tmp_path, cut_folder):
    import json
    import shutil

    from vllm_pool import LLM

    folder = tmp_path / "m"
    shutil.copytree(cut_folder, folder)
    cfg_file = folder / "config_sentence_transformers.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["truncate_dim"] = 1024  # at least the full size: ST's slice keeps everything
    cfg_file.write_text(json.dumps(cfg))
    (out,) = LLM(str(folder)).embed("x", use_tqdm=False)
    assert len(out.outputs.embedding) == 384
    cfg["truncate_dim"] = "64"
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="truncate_dim must be a positive integer"):
        LLM(str(folder))
