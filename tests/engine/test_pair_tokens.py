"""Cross-encoder pairs tokenized as Sentence Transformers / transformers feed them: segment ids
only where the tokenizer returns them, and an empty second text still a pair."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tiny_models


def _cross_encoder(folder):
    """A 1-label BERT cross-encoder whose head is scaled so that every input id moves its score."""
    from safetensors.torch import load_file, save_file

    tiny_models.bert(folder, cls="BertForSequenceClassification", num_labels=1)
    weights = folder / "model.safetensors"
    state = load_file(str(weights))
    state["classifier.weight"] = state["classifier.weight"] * 40
    save_file(state, str(weights), metadata={"format": "pt"})
    return folder


def _predict(folder, pairs):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(folder), device="cpu").predict(pairs)


@pytest.mark.parametrize("packed", [True, False])
def test_no_segment_ids_where_the_tokenizer_returns_none(tmp_path, packed):
    """A tokenizer configured without ``token_type_ids`` (``model_input_names``): the model sees
    zeros in ST and transformers, so the engine must not add the backend's segment ids."""
    from vllm_pool import LLM

    folder = _cross_encoder(tmp_path / "ce")
    cfg_file = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["model_input_names"] = ["input_ids", "attention_mask"]
    cfg_file.write_text(json.dumps(cfg))
    q, docs = "what is the capital of france", ["paris is the capital city of france", "a", "hello world"]
    ref = _predict(folder, [(q, d) for d in docs])
    ours = [o.outputs.score for o in LLM(str(folder), packed=packed).score(q, docs, use_tqdm=False)]
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_segment_ids_kept_where_the_tokenizer_returns_them(tmp_path):
    from vllm_pool import LLM

    folder = _cross_encoder(tmp_path / "ce")
    q, docs = "what is the capital of france", ["paris is the capital city of france", "hello world"]
    ref = _predict(folder, [(q, d) for d in docs])
    ours = [o.outputs.score for o in LLM(str(folder)).score(q, docs, use_tqdm=False)]
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_empty_document_after_an_over_long_query_stays_a_pair(tmp_path):
    """The first text alone over the limit (cut longest-first): an empty second text keeps its
    separator, as in ``CrossEncoder.predict``'s batched tokenizer call."""
    from transformers import AutoTokenizer

    from vllm_pool import LLM

    folder = _cross_encoder(tmp_path / "ce")
    q = "the cat and the dog and the bird " * 20  # > 128 tokens
    tok = AutoTokenizer.from_pretrained(folder)
    want = tok([q], [""], truncation=True, max_length=128)["input_ids"][0]
    llm = LLM(str(folder))
    (out,) = llm.score(q, "", truncate_prompt_tokens=-1, use_tqdm=False)
    assert out.prompt_token_ids == want  # ends [SEP] [SEP]: the empty pair's separator
    assert want[-2:] == [tok.sep_token_id] * 2
    ref = _predict(folder, [(q, "")])
    assert abs(out.outputs.score - float(ref[0])) < 1e-5
    assert tok(q, "", truncation=True, max_length=128)["input_ids"] != want  # a lone "" is no pair
