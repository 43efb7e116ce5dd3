"""Sentence Transformers prompts as instructions: ``include_prompt=False`` keeps the prompt
tokens out of pooling, exactly as ``SentenceTransformer.encode(prompt=...)`` does."""

from __future__ import annotations

import numpy as np
import pytest
import tiny_models
from tiny_models import TEXTS

PROMPT = "represent this sentence for searching: "


def _st(folder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


def _embed(llm, prompts):
    # Sentence Transformers cuts TEXTS[5] to max_seq_length: ask for the same cut
    outs = llm.embed(prompts, use_tqdm=False, truncate_prompt_tokens=-1)
    return np.array([o.outputs.embedding for o in outs])


@pytest.mark.parametrize("pooling", ["mean", "cls", "lasttoken"])
@pytest.mark.parametrize("include_prompt", [False, True])
def test_instruction_pooling_matches_st_prompt(tiny_dir, tiny_bert, pooling, include_prompt):
    from vllm_pool import LLM

    folder = tiny_models.sentence_transformer(
        tiny_dir / f"st_prompt_{pooling}_{include_prompt}", tiny_bert, pooling=pooling, dense_out=None,
        include_prompt=include_prompt, prompts={"query": PROMPT},
    )  # fmt: skip
    llm = LLM(str(folder))
    assert llm.model_config.st.include_prompt is include_prompt
    ref = _st(folder).encode(TEXTS, prompt=PROMPT, convert_to_numpy=True)
    # mixed batch: instruction dicts, plain texts (ST without a prompt) and token ids together
    ours = _embed(llm, [{"prompt": t, "instruction": PROMPT} for t in TEXTS])
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    plain = _embed(llm, TEXTS)
    np.testing.assert_allclose(plain, _st(folder).encode(TEXTS, convert_to_numpy=True), rtol=1e-4, atol=1e-5)
    mixed = _embed(llm, [TEXTS[0], {"prompt": TEXTS[1], "instruction": PROMPT}, TEXTS[2]])
    np.testing.assert_allclose(mixed, np.stack([plain[0], ours[1], plain[2]]), rtol=1e-4, atol=1e-5)
    differs = not np.allclose(ours, _embed(llm, [PROMPT + t for t in TEXTS]), atol=1e-5)
    assert differs is (not include_prompt and pooling != "lasttoken")  # the prompt is left out


def test_instruction_length_follows_st(tiny_dir, tiny_bert, tiny_qwen2):
    """The instruction's tokens less a trailing special token (BERT's [SEP]; none for Qwen2)."""
    from vllm_pool import LLM

    for base in (tiny_bert, tiny_qwen2):
        llm = LLM(str(base))
        tok = llm.get_tokenizer()
        ids = tok(PROMPT)["input_ids"]
        expected = len(ids) - (1 if ids[-1] in tok.all_special_ids else 0)
        assert llm.input_processor.instruction_len(PROMPT) == expected
        req = llm.make_requests([{"prompt": "hello", "instruction": PROMPT}], "embed")[0]
        assert req.instruction_len == expected
        assert req.prompt_token_ids == llm.make_requests([PROMPT + "hello"], "embed")[0].prompt_token_ids


def test_bad_instruction_is_a_clear_error(default_llm):
    with pytest.raises(TypeError, match=r"prompts\[0\]\['instruction'\] must be a string"):
        default_llm.embed([{"prompt": "x", "instruction": 3}], use_tqdm=False)
    assert len(default_llm.embed(["still works"], use_tqdm=False)) == 1


def test_skip_instructions_keeps_the_last_token():
    import torch
    from vllm_pool.engine.methods import mean_pool, skip_instructions
    from vllm_pool.engine.types import HiddenStates

    data = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    hidden = HiddenStates(data=data, cu_seqlens=torch.tensor([0, 2, 6]), token_ids=torch.arange(6))
    cut = skip_instructions(hidden, [5, 1])  # more than the first request has: its last token stays
    assert cut.cu_seqlens.tolist() == [0, 1, 4] and cut.token_ids.tolist() == [1, 3, 4, 5]
    torch.testing.assert_close(mean_pool(cut), torch.stack([data[1], data[3:6].mean(0)]))
    assert skip_instructions(hidden, [0, 0]) is hidden


def test_mean_pool_is_each_requests_mean_in_fp32():
    import torch
    from vllm_pool.engine.methods import mean_pool
    from vllm_pool.engine.types import HiddenStates

    torch.manual_seed(0)
    lens = [1, 7, 1, 130, 3, 64]
    data = torch.randn(sum(lens), 48).to(torch.bfloat16)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()])
    hidden = HiddenStates(data=data, cu_seqlens=cu, token_ids=torch.zeros(sum(lens), dtype=torch.long))
    pooled = mean_pool(hidden)
    assert pooled.dtype == torch.float32 and pooled.shape == (len(lens), 48)
    expected = torch.stack([rows.float().mean(0) for rows in data.split(lens)])
    torch.testing.assert_close(pooled, expected, atol=1e-6, rtol=1e-5)
