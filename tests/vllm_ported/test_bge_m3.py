"""Ported from vLLM ``tests/models/language/pooling/test_bge_m3.py`` (BGE-M3 over the server).

Adapted: BAAI/bge-m3 -> the tiny ``bge_m3`` (XLM-RoBERTa with ``sparse_linear.pt`` and
``colbert_linear.pt``), served with ``hf_overrides={"architectures": ["BgeM3EmbeddingModel"]}``
as vLLM's ``--hf-overrides``; the server process -> the app in process; the pasted reference
scores of the hub model -> FlagEmbedding's BGEM3 semantics computed directly in torch on the
same weights (dense: normalized CLS; lexical: ``relu(sparse_linear(h))``, CLS / EOS / PAD /
UNK dropped, max per token id; ColBERT: normalized ``colbert_linear(h[1:])``). vLLM's
``sparse_embeddings`` helper is kept as is, except that it drops the tokenizer's BOS id
(``0`` in BGE-M3's vocabulary, another id in the tiny one). The corner case uses a word of the
tiny vocabulary ("hello") instead of "Hi".
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

MODEL_NAME = "BAAI/bge-m3"
MAX_MODEL_LEN = 128

sentences_1 = ["What is BGE M3?", "Definition of BM25"]
sentences_2 = [
    "BGE M3 is an embedding model supporting dense retrieval, lexical matching and multi-vector interaction.",
    "BM25 is a bag-of-words retrieval function that ranks a set "
    "of documents based on the query terms appearing in each document",
]


@pytest.fixture(scope="module")
def llm(bge_m3):
    from vllm_pool import LLM

    overrides = {"architectures": ["BgeM3EmbeddingModel"]}
    return LLM(str(bge_m3), max_model_len=MAX_MODEL_LEN, hf_overrides=overrides)


@pytest.fixture()
async def client(llm, client_for):
    from vllm_pool.engine.server import ServerConfig, build_app

    async with client_for(build_app(llm, ServerConfig(served_model_names=[MODEL_NAME]))) as c:
        yield c


@pytest.fixture(scope="module")
def flag_embedding(bge_m3):
    """FlagEmbedding's BGEM3 outputs of a sentence, computed in torch on the same weights."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(bge_m3)
    model = transformers.AutoModel.from_pretrained(bge_m3).eval()
    sparse = torch.nn.Linear(32, 1)
    sparse.load_state_dict(torch.load(bge_m3 / "sparse_linear.pt", weights_only=True))
    colbert = torch.nn.Linear(32, 32)
    colbert.load_state_dict(torch.load(bge_m3 / "colbert_linear.pt", weights_only=True))
    unused = {tok.cls_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}

    def encode(sentence: str) -> dict:
        enc = tok(sentence, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state[0]
            weights = torch.relu(sparse(h)).squeeze(-1).tolist()
            colbert_vecs = F.normalize(colbert(h[1:]), dim=-1)
        lexical: dict[int, float] = {}
        for idx, w in zip(enc["input_ids"][0].tolist(), weights):
            if idx not in unused and w > 0 and w > lexical.get(idx, 0.0):
                lexical[idx] = w
        return {"dense": F.normalize(h[0], dim=-1), "lexical": lexical, "colbert": colbert_vecs}

    return encode


async def run_client_embeddings(client, sentences):
    response = await client.post("/v1/embeddings", json={"model": MODEL_NAME, "input": sentences})
    response.raise_for_status()
    return [d["embedding"] for d in response.json()["data"]]


async def test_bge_m3_api_server_embedding(client, flag_embedding):
    embeddings_1 = torch.tensor(await run_client_embeddings(client, sentences_1))
    embeddings_2 = torch.tensor(await run_client_embeddings(client, sentences_2))
    similarity = embeddings_1 @ embeddings_2.T

    ref_1 = torch.stack([flag_embedding(s)["dense"] for s in sentences_1])
    ref_2 = torch.stack([flag_embedding(s)["dense"] for s in sentences_2])
    reference = ref_1 @ ref_2.T

    assert torch.allclose(similarity, reference, rtol=0.01)


async def tokenize(client, sentences: list[str]) -> list[list[int]]:
    out = []
    for sentence in sentences:
        response = await client.post("/tokenize", json={"model": MODEL_NAME, "prompt": sentence})
        out.append(response.json()["tokens"])
    return out


async def sparse_embeddings(client, sentences: list[str], bos_token_id: int) -> list[dict[int, float]]:
    all_tokens = await tokenize(client, sentences)
    body = {"model": MODEL_NAME, "input": sentences, "task": "token_classify"}
    result = await client.post("/pooling", json=body)
    all_embeddings = [data["data"] for data in result.json()["data"]]

    ret = []
    for sent_tokens, sent_emb in zip(all_tokens, all_embeddings):
        token_embs = dict[int, float]()
        if sent_tokens[0] == bos_token_id:
            sent_tokens = sent_tokens[1:]
        for token, val in zip(sent_tokens, sent_emb):
            token_embs[token] = max(val, token_embs.get(token, 0.0))
        ret.append(token_embs)
    return ret


# Based on FlagEmbedding's BGEM3 compute_lexical_matching_score
def compute_lexical_matching_score(lw1: dict[int, float], lw2: dict[int, float]) -> float:
    scores = 0.0
    for token, weight in lw1.items():
        if token in lw2:
            scores += weight * lw2[token]
    return scores


async def test_bge_m3_api_server_sparse_embedding(client, llm, flag_embedding):
    bos = llm.get_tokenizer().bos_token_id
    embeddings_1 = await sparse_embeddings(client, sentences_1, bos)
    embeddings_2 = await sparse_embeddings(client, sentences_2, bos)

    ref_1 = [flag_embedding(s)["lexical"] for s in sentences_1]
    ref_2 = [flag_embedding(s)["lexical"] for s in sentences_2]

    lexical_scores_1_0_x_2_0 = compute_lexical_matching_score(embeddings_1[0], embeddings_2[0])
    reference = compute_lexical_matching_score(ref_1[0], ref_2[0])
    assert lexical_scores_1_0_x_2_0 == pytest.approx(reference, rel=0.01)
    assert lexical_scores_1_0_x_2_0 > 0  # the sentences share tokens

    lexical_scores_1_0_x_1_1 = compute_lexical_matching_score(embeddings_1[0], embeddings_1[1])
    assert lexical_scores_1_0_x_1_1 == pytest.approx(
        compute_lexical_matching_score(ref_1[0], ref_1[1]), rel=0.01, abs=1e-9
    )


async def test_bge_m3_api_server_sparse_embedding_corner_case(client, llm, flag_embedding):
    tok = llm.get_tokenizer()
    embeddings = await sparse_embeddings(client, ["hello"], tok.bos_token_id)
    assert len(embeddings) == 1
    hello = tok.convert_tokens_to_ids("hello")
    assert hello in embeddings[0]
    assert set(embeddings[0]) == {hello}  # no BOS / EOS weights
    reference = flag_embedding("hello")["lexical"]
    assert embeddings[0][hello] == pytest.approx(reference.get(hello, 0.0), rel=0.01, abs=1e-9)


TASK = "token_embed"


# FlagEmbedding's BGEM3 colbert_score
def colbert_score(q_reps: torch.Tensor, p_reps: torch.Tensor) -> torch.Tensor:
    token_scores = torch.einsum("in,jn->ij", q_reps, p_reps)
    scores, _ = token_scores.max(-1)
    scores = torch.sum(scores) / q_reps.size(0)
    return scores


async def test_bge_m3_api_server_multi_vector(client, flag_embedding):
    result_1 = await client.post("/pooling", json={"model": MODEL_NAME, "input": sentences_1, "task": TASK})
    embeddings_1 = [torch.tensor(data["data"]) for data in result_1.json()["data"]]

    result_2 = await client.post("/pooling", json={"model": MODEL_NAME, "input": sentences_2, "task": TASK})
    embeddings_2 = [torch.tensor(data["data"]) for data in result_2.json()["data"]]

    ref_1 = [flag_embedding(s)["colbert"] for s in sentences_1]
    ref_2 = [flag_embedding(s)["colbert"] for s in sentences_2]

    colbert_score_1_0_x_2_0 = colbert_score(embeddings_1[0], embeddings_2[0])
    assert float(colbert_score_1_0_x_2_0) == pytest.approx(float(colbert_score(ref_1[0], ref_2[0])), rel=0.01)
    colbert_score_1_0_x_2_1 = colbert_score(embeddings_1[0], embeddings_2[1])
    assert float(colbert_score_1_0_x_2_1) == pytest.approx(float(colbert_score(ref_1[0], ref_2[1])), rel=0.01)
