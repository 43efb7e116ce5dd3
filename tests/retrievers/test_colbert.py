import numpy as np
import pytest
from vllm_pool.retrievers import ColBERTConfig, ColBERTEncoder, EngineTokenEncoder


def test_query_markers_and_mask_padding(fake_encoder):
    enc = ColBERTEncoder(fake_encoder, ColBERTConfig.colbert_v2())
    (ids,) = enc.query_token_ids(["how do lists work?"])
    tok = fake_encoder.tokenizer
    words = tok.encode("how do lists work?", add_special_tokens=False)
    assert ids[:2] == [tok.cls_token_id, 5]  # [CLS] [unused0]
    assert ids[2 : 2 + len(words)] == words
    assert ids[2 + len(words)] == tok.sep_token_id
    assert len(ids) == 32 and set(ids[3 + len(words) :]) == {tok.mask_token_id}
    vecs = enc.encode_queries(["how do lists work?"])[0]
    assert vecs.shape == (32, 16)  # the [MASK] tokens get vectors, not dropped
    assert fake_encoder.calls[-1][0] == ids
    n = 3 + len(words)  # colbert-ai: the masks are not attended to
    assert fake_encoder.mask_calls[-1] == [[1] * n + [0] * (32 - n)]
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)


def test_long_query_is_truncated_to_query_maxlen(fake_encoder):
    enc = ColBERTEncoder(fake_encoder, ColBERTConfig(query_maxlen=8, query_marker="[unused0]"))
    (ids,) = enc.query_token_ids([" ".join(f"w{i}" for i in range(50))])
    assert len(ids) == 8 and ids[1] == 5 and ids[-1] == fake_encoder.tokenizer.sep_token_id


def test_document_markers_punctuation_and_maxlen(fake_encoder):
    enc = ColBERTEncoder(fake_encoder, ColBERTConfig(doc_marker="[unused1]", doc_maxlen=10))
    text = "Hello, world! (tuples) are immutable; lists aren't."
    (ids,) = enc.document_token_ids([text])
    assert ids[:2] == [2, 6] and ids[-1] == 3 and len(ids) == 10  # [CLS] [unused1] ... [SEP]
    (vecs,) = enc.encode_documents([text])
    punct = {i for i in ids if i in enc.skiplist}
    assert punct  # the text does contain punctuation tokens
    kept = [i for i in ids if i not in enc.skiplist]
    assert vecs.shape == (len(kept), 16)
    np.testing.assert_allclose(vecs, np.stack([fake_encoder.vector(i) for i in kept]), rtol=1e-6)


def test_no_markers_no_augmentation(fake_encoder):
    cfg = ColBERTConfig(mask_augment=False, skip_punctuation=False)
    enc = ColBERTEncoder(fake_encoder, cfg)
    tok = fake_encoder.tokenizer
    assert enc.query_token_ids(["a b."]) == [tok.encode("a b.")]
    assert enc.document_token_ids(["a b."]) == [tok.encode("a b.")]
    assert enc.encode_documents(["a b."])[0].shape == (5, 16)
    assert enc.skiplist == set()


def test_bad_inputs(fake_encoder):
    enc = ColBERTEncoder(fake_encoder)
    with pytest.raises(TypeError, match="single string"):
        enc.encode_queries("text")
    with pytest.raises(ValueError, match="at least one"):
        enc.encode_documents([])
    with pytest.raises(TypeError, match=r"documents\[0\]: expected a string"):
        enc.encode_documents([3])
    blank = enc.encode_documents(["a cat", "  ", ""])  # a blank page is its special tokens (PyLate)
    assert len(blank) == 3 and len(blank[1]) == len(blank[2]) == len(blank[0]) - 2
    with pytest.raises(ValueError, match=r"queries\[0\] is empty"):
        enc.encode_queries([""])
    with pytest.raises(ValueError, match="not a token"):
        ColBERTEncoder(fake_encoder, ColBERTConfig(query_marker="[Q]"))
    with pytest.raises(ValueError, match="at least 3"):
        ColBERTConfig(query_maxlen=2)


def test_engine_adapter_with_a_fake_llm(fake_encoder):
    import torch

    class Out:
        def __init__(self, ids):
            self.prompt_token_ids = ids
            self.outputs = type("PoolingOutput", (), {"data": torch.ones(len(ids), 4)})()

    class FakeLLM:
        model_name = "fake-llm"

        def __init__(self):
            self.calls = []

        def get_tokenizer(self):
            return fake_encoder.tokenizer

        def encode(self, prompts, pooling_task, use_tqdm):
            self.calls.append((prompts, pooling_task))
            return [Out(p["prompt_token_ids"]) for p in prompts]

    llm = FakeLLM()
    enc = ColBERTEncoder.from_llm(llm)
    assert isinstance(enc.encoder, EngineTokenEncoder) and enc.model_name == "fake-llm"
    (vecs,) = enc.encode_documents(["x y z"])
    assert vecs.shape == (5, 4) and vecs.dtype == np.float32
    prompts, task = llm.calls[0]
    assert task == "token_embed" and prompts == [
        {"prompt_token_ids": [2, *fake_encoder.tokenizer.encode("x y z", False), 3]}
    ]
