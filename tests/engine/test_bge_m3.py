"""BGE-M3 heads (dense, sparse, ColBERT) on a BGE-M3-shaped tiny XLM-RoBERTa."""

from __future__ import annotations

import pytest
import tiny_models
import torch
import torch.nn.functional as F

BGE = {"architectures": ["BgeM3EmbeddingModel"]}
TEXTS = ["what is the capital of france", "paris is the capital city of france", "hello hello world"]


@pytest.fixture(scope="module")
def bge_folder(tiny_dir):
    import transformers

    folder = tiny_models.xlm_roberta(tiny_dir / "bge_m3")
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    tok.cls_token, tok.sep_token = "<s>", "</s>"  # as XLM-R's (and BGE-M3's) tokenizer
    tok.save_pretrained(folder)
    torch.manual_seed(3)
    torch.save(torch.nn.Linear(32, 1).state_dict(), folder / "sparse_linear.pt")
    torch.save(torch.nn.Linear(32, 24).state_dict(), folder / "colbert_linear.pt")
    return folder


def _reference(folder, text):
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    sparse = torch.nn.Linear(32, 1)
    sparse.load_state_dict(torch.load(folder / "sparse_linear.pt", weights_only=True))
    colbert = torch.nn.Linear(32, 24)
    colbert.load_state_dict(torch.load(folder / "colbert_linear.pt", weights_only=True))
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state[0]
        return (
            enc["input_ids"][0].tolist(),
            F.normalize(h[0], dim=-1),
            torch.relu(sparse(h)).squeeze(-1)[1:-1],  # vLLM leaves out the BOS / EOS weights
            F.normalize(colbert(h[1:]), dim=-1),
        )


@pytest.mark.parametrize("packed", [False, True])
def test_three_heads_match_reference(bge_folder, packed):
    from vllm_pool import LLM

    llm = LLM(str(bge_folder), hf_overrides=BGE, packed=packed)
    assert llm.runner.packed is packed
    assert llm.get_supported_tasks() == ("embed", "token_embed", "token_classify")
    dense = llm.embed(TEXTS, use_tqdm=False)
    sparse = llm.encode(TEXTS, pooling_task="token_classify", use_tqdm=False)
    colbert = llm.encode(TEXTS, pooling_task="token_embed", use_tqdm=False)
    for i, text in enumerate(TEXTS):
        ids, d, s, c = _reference(bge_folder, text)
        assert dense[i].prompt_token_ids == ids
        torch.testing.assert_close(torch.tensor(dense[i].outputs.embedding), d, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(sparse[i].outputs.data, s, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(colbert[i].outputs.data, c, rtol=1e-4, atol=1e-5)


def test_one_call_returns_all_three(bge_folder):
    from vllm_pool import LLM

    llm = LLM(str(bge_folder), hf_overrides=BGE)
    both = llm.encode_multi(TEXTS, ["embed", "token_classify", "token_embed"], use_tqdm=False)
    assert set(both) == {"embed", "token_classify", "token_embed"}
    for task in both:
        single = llm.encode(TEXTS, pooling_task=task, use_tqdm=False)
        for a, b in zip(both[task], single):
            torch.testing.assert_close(a.outputs.data, b.outputs.data)
    with pytest.raises(ValueError, match="pooling_params given for tasks not asked for"):
        from vllm_pool import PoolingParams

        llm.encode_multi(TEXTS, ["embed"], {"token_embed": PoolingParams()}, use_tqdm=False)


def test_sparse_weights_lexical_and_colbert_scores(bge_folder):
    from vllm_pool.engine.bge_m3 import colbert_score, lexical_score, lexical_weights

    from vllm_pool import LLM

    llm = LLM(str(bge_folder), hf_overrides=BGE)
    tok = llm.get_tokenizer()
    special = [tok.cls_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id, tok.bos_token_id]
    outs = llm.encode(TEXTS, pooling_task="token_classify", use_tqdm=False)
    weights = [lexical_weights(o, tok) for o in outs]
    for o, w in zip(outs, weights):
        assert len(o.outputs.data) == len(o.prompt_token_ids) - 2  # no BOS / EOS weights
        assert not set(w) & {t for t in special if t is not None}
        for tid, val in w.items():  # the max over repeats
            assert val == pytest.approx(
                max(float(x) for t, x in zip(o.prompt_token_ids[1:-1], o.outputs.data) if t == tid)
            )
    # "hello hello world": one entry for the repeated token
    hello = tok.convert_tokens_to_ids("hello")
    assert list(weights[2]).count(hello) <= 1
    shared = set(weights[0]) & set(weights[1])
    assert lexical_score(weights[0], weights[1]) == pytest.approx(
        sum(weights[0][t] * weights[1][t] for t in shared)
    )
    cols = llm.encode(TEXTS[:2], pooling_task="token_embed", use_tqdm=False)
    q, d = cols[0].outputs.data, cols[1].outputs.data
    expected = sum(max(float(q[i] @ d[j]) for j in range(len(d))) for i in range(len(q))) / len(q)
    assert colbert_score(q, d) == pytest.approx(expected, abs=1e-5)


def test_head_files_are_not_unpickled(tmp_path, bge_folder):
    import shutil

    from vllm_pool import LLM, ModelNotFoundError

    bad = tmp_path / "bad"
    shutil.copytree(bge_folder, bad)

    import datetime  # any non-tensor object: the weights-only loader refuses to unpickle it

    torch.save({"weight": datetime.datetime(2020, 1, 1)}, bad / "sparse_linear.pt")
    with pytest.raises(ValueError, match="Cannot read the BGE-M3 head file .*sparse_linear.pt"):
        LLM(str(bad), hf_overrides=BGE)
    (bad / "sparse_linear.pt").unlink()
    with pytest.raises(ModelNotFoundError, match="BGE-M3 head file not found: .*sparse_linear.pt"):
        LLM(str(bad), hf_overrides=BGE)


def _flag_embedding_lexical_weights(folder, text):
    """FlagEmbedding's BGEM3 ``lexical_weights`` computed directly in torch on the same weights:
    ``relu(sparse_linear(h))`` over every token, CLS / EOS / PAD / UNK ids dropped, weights
    <= 0 dropped, the max over repeated ids."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    sparse = torch.nn.Linear(32, 1)
    sparse.load_state_dict(torch.load(folder / "sparse_linear.pt", weights_only=True))
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        w = torch.relu(sparse(model(**enc).last_hidden_state[0])).squeeze(-1)
    unused = {tok.cls_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}
    out: dict[int, float] = {}
    for idx, val in zip(enc["input_ids"][0].tolist(), w.tolist()):
        if idx not in unused and val > 0 and val > out.get(idx, 0.0):
            out[idx] = val
    return out


def test_lexical_weights_and_scores_match_flag_embedding(bge_folder):
    """Issue 14 item 3: the spec's lexical score on our sparse output equals FlagEmbedding's."""
    from vllm_pool.engine.bge_m3 import lexical_score, lexical_weights

    from vllm_pool import LLM

    llm = LLM(str(bge_folder), hf_overrides=BGE)
    tok = llm.get_tokenizer()
    texts = TEXTS + ["the cat the cat the dog", "a"]
    outs = llm.encode(texts, pooling_task="token_classify", use_tqdm=False)
    ours = [lexical_weights(o, tok) for o in outs]
    ref = [_flag_embedding_lexical_weights(bge_folder, t) for t in texts]
    for a, b in zip(ours, ref):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6)
    for i in range(len(texts)):
        for j in range(len(texts)):
            expected = sum(w * ref[j][t] for t, w in ref[i].items() if t in ref[j])
            assert lexical_score(ours[i], ours[j]) == pytest.approx(expected, rel=1e-4, abs=1e-7)
    n = len(texts)
    assert any(lexical_score(ours[i], ours[j]) > 0 for i in range(n) for j in range(i + 1, n))
