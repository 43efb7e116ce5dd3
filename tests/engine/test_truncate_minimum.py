"""truncate_prompt_tokens below the tokenizer's special tokens: a clear ValueError, never an uncut
prompt in the model (a long one used to crash inside transformers)."""

from __future__ import annotations

import re

import pytest
import tiny_models
from transformers import AutoTokenizer

from vllm_pool import LLM

LONG = "the cat " * 200  # about 400 tokens, over the tiny models' 128


@pytest.fixture(scope="module")
def llm(tiny_bert) -> LLM:
    return LLM(str(tiny_bert))


@pytest.fixture(scope="module")
def tok(tiny_bert):
    return AutoTokenizer.from_pretrained(tiny_bert)


@pytest.fixture(scope="module")
def cross(tiny_dir) -> LLM:
    folder = tiny_dir / "bert_ce_truncate"
    if not (folder / "config.json").exists():
        tiny_models.bert(folder, cls="BertForSequenceClassification", num_labels=1)
    return LLM(str(folder))


def _minimum_error(n: int, minimum: int, where: str) -> str:
    return re.escape(f"truncate_prompt_tokens={n} ({where})") + f".*minimum is {minimum}"


@pytest.mark.parametrize("text", ["hello world", LONG])
def test_below_special_tokens_is_value_error(llm, tok, text) -> None:
    minimum = tok.num_special_tokens_to_add(pair=False)
    assert minimum == 2  # [CLS] ... [SEP]
    with pytest.raises(ValueError, match=_minimum_error(1, minimum, "prompts[0]")):
        llm.embed(text, truncate_prompt_tokens=1, use_tqdm=False)
    assert len(llm.embed(["a", "b"], use_tqdm=False)) == 2  # the engine still works


def test_below_special_tokens_names_the_position(llm) -> None:
    prompts = ["a", {"prompt": LONG}]
    with pytest.raises(ValueError, match=_minimum_error(1, 2, "prompts[0]")):
        llm.encode(prompts, pooling_task="token_embed", truncate_prompt_tokens=1, use_tqdm=False)


def test_below_special_tokens_in_chunks(llm) -> None:
    """Inputs over one tokenize chunk are prechecked before any work."""
    old = llm.tokenize_chunk
    llm.tokenize_chunk = 2
    try:
        with pytest.raises(ValueError, match=_minimum_error(1, 2, "prompts[0]")):
            llm.embed(["a", "b", "c", LONG], truncate_prompt_tokens=1, use_tqdm=False)
    finally:
        llm.tokenize_chunk = old


def test_token_id_prompts_may_be_cut_below(llm) -> None:
    """No special tokens are added to token ids: one token is a valid cut."""
    (out,) = llm.embed({"prompt_token_ids": [2, 75, 140, 3]}, truncate_prompt_tokens=1, use_tqdm=False)
    assert out.prompt_token_ids == [2]


def test_at_the_minimum_matches_the_tokenizer(llm, tok) -> None:
    for text in ("hello world", LONG):
        (out,) = llm.embed(text, truncate_prompt_tokens=2, use_tqdm=False)
        want = tok(text, truncation=True, max_length=2)["input_ids"]
        assert out.prompt_token_ids == want and len(want) == 2


def test_pair_below_special_tokens_is_value_error(cross) -> None:
    minimum = cross.tokenizer.num_special_tokens_to_add(pair=True)
    assert minimum == 3
    for n in (1, 2):
        with pytest.raises(ValueError, match=_minimum_error(n, minimum, "pair 0")):
            cross.score("query", LONG, truncate_prompt_tokens=n, use_tqdm=False)
    (s,) = cross.score("query", LONG, truncate_prompt_tokens=minimum, use_tqdm=False)
    assert len(s.prompt_token_ids) <= minimum


def test_uncut_tokenizer_output_is_refused(tiny_bert) -> None:
    """Whatever the tokenizer does, a text longer than its limit never reaches the model."""
    from vllm_pool.engine.inputs import InputProcessor

    from vllm_pool import PoolingParams

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    proc = InputProcessor(tok, max_model_len=128, vocab_size=tok.vocab_size)
    proc._encode = lambda texts, limit: [tok(t)["input_ids"] for t in texts]  # ignores the limit
    with pytest.raises(ValueError, match=r"truncate_prompt_tokens=5 \(prompts\[0\]\).*could not cut"):
        proc([LONG], [PoolingParams(truncate_prompt_tokens=5)])
