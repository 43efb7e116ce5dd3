"""Bad input gives clear errors, and the engine keeps working afterwards."""

from __future__ import annotations

import numpy as np
import pytest

from vllm_pool import PoolingParams


def _still_works(llm):
    (out,) = llm.embed("still works", use_tqdm=False)
    assert len(out.outputs.embedding) == llm.embedding_dim


def test_empty_list_gives_empty_list(default_llm):
    assert default_llm.embed([], use_tqdm=False) == []
    assert default_llm.encode([], pooling_task="token_embed", use_tqdm=False) == []


@pytest.mark.parametrize(
    "prompts, position",
    [
        ([None], "prompts[0]"),
        (["ok", 3], "prompts[1]"),
        (["ok", "ok", ["nested"]], "prompts[2]"),
        (["ok", 1.5], "prompts[1]"),
        ([{"text": "no key"}], "prompts[0]"),
        ([{"prompt_token_ids": "101 102"}], "prompts[0]"),
    ],
)
def test_wrong_item_types_name_the_position(default_llm, prompts, position):
    with pytest.raises(TypeError, match=position.replace("[", r"\[").replace("]", r"\]")):
        default_llm.embed(prompts, use_tqdm=False)
    _still_works(default_llm)


@pytest.mark.parametrize("prompts", [None, 42, b"bytes"])
def test_wrong_top_level_types(default_llm, prompts):
    with pytest.raises(TypeError, match="prompts must be"):
        default_llm.embed(prompts, use_tqdm=False)
    _still_works(default_llm)


def test_unknown_pooling_task_lists_supported(default_llm):
    with pytest.raises(ValueError, match=r"supports \['embed', 'token_embed'\]"):
        default_llm.encode("x", pooling_task="nonsense", use_tqdm=False)
    with pytest.raises(ValueError, match="pooling_task required for `LLM.encode`"):
        default_llm.encode("x", use_tqdm=False)
    _still_works(default_llm)


def test_task_the_model_does_not_support(default_llm):
    from vllm_pool import UnsupportedTaskError

    with pytest.raises(UnsupportedTaskError, match="does not support the 'classify' task"):
        default_llm.encode("x", pooling_task="classify", use_tqdm=False)
    _still_works(default_llm)


def test_token_id_prompts(default_llm):
    tok = default_llm.get_tokenizer()
    ids = tok("hello world")["input_ids"]
    (a,) = default_llm.embed({"prompt_token_ids": ids}, use_tqdm=False)
    (b,) = default_llm.embed("hello world", use_tqdm=False)
    assert a.prompt_token_ids == b.prompt_token_ids
    assert a.outputs.embedding == pytest.approx(b.outputs.embedding, abs=1e-6)
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 30522\)"):
        default_llm.embed({"prompt_token_ids": [101, 99999, 102]}, use_tqdm=False)
    with pytest.raises(ValueError, match=r"\(length 300\) is longer than the maximum model length of 256"):
        default_llm.embed({"prompt_token_ids": [101] * 300}, use_tqdm=False)
    with pytest.raises(ValueError, match="is empty"):
        default_llm.embed({"prompt_token_ids": []}, use_tqdm=False)
    (c,) = default_llm.embed({"prompt_token_ids": [101] * 300}, use_tqdm=False, truncate_prompt_tokens=20)
    assert len(c.prompt_token_ids) == 20
    _still_works(default_llm)


@pytest.mark.parametrize("value", [0, -2, 1.5, "10"])
def test_bad_truncate_prompt_tokens(default_llm, value):
    with pytest.raises(ValueError, match="truncate_prompt_tokens must be a positive integer or -1"):
        default_llm.embed("x", use_tqdm=False, truncate_prompt_tokens=value)


def test_pooling_params_list_must_match(default_llm):
    from vllm_pool import PoolingParams

    with pytest.raises(ValueError, match="pooling_params has 1 entries but there are 2 prompts"):
        default_llm.embed(["a", "b"], [PoolingParams()], use_tqdm=False)
    with pytest.raises(TypeError, match="pooling_params must be PoolingParams"):
        default_llm.embed(["a"], {"normalize": False}, use_tqdm=False)
    outs = default_llm.embed(["a", "b"], [PoolingParams(normalize=False), PoolingParams()], use_tqdm=False)
    norms = [sum(x * x for x in o.outputs.embedding) ** 0.5 for o in outs]
    assert abs(norms[1] - 1) < 1e-5 and abs(norms[0] - 1) > 1e-3


def test_bad_runner_convert_and_pooler_config(default_model_dir):
    from vllm_pool import LLM

    with pytest.raises(ValueError, match="runs pooling models only"):
        LLM(str(default_model_dir), runner="generate")
    with pytest.raises(ValueError, match="convert must be"):
        LLM(str(default_model_dir), convert="reward")
    with pytest.raises(ValueError, match="Unknown pooler_config field 'poolng_type'"):
        LLM(str(default_model_dir), pooler_config={"poolng_type": "CLS"})
    with pytest.raises(ValueError, match="Unknown pooling_type 'SUM'"):
        LLM(str(default_model_dir), pooler_config={"pooling_type": "SUM"})
    with pytest.raises(ValueError, match="larger than the model's limit of 512"):
        LLM(str(default_model_dir), max_model_len=1000)
    with pytest.raises(ValueError, match="Unknown dtype"):
        LLM(str(default_model_dir), dtype="float8")


def test_empty_text_embeds_as_sentence_transformers_does(default_llm, st_model):
    # "" is [CLS] [SEP] on BERT: it has tokens, so it embeds (as in vLLM and ST)
    texts = ["ok", "", "  ", "a page"]
    ours = np.asarray([o.outputs.embedding for o in default_llm.embed(texts, use_tqdm=False)])
    ref = st_model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    (out,) = default_llm.embed([{"prompt": ""}], use_tqdm=False)
    assert out.prompt_token_ids == [101, 102]
    # only a prompt with no tokens at all is rejected, naming it; the engine stays usable
    with pytest.raises(ValueError, match=r"prompts\[1\]\['prompt_token_ids'\] is empty"):
        default_llm.embed(["ok", {"prompt_token_ids": []}], use_tqdm=False)
    # scores take "" too (vLLM, CrossEncoder.predict): the cosine of the embeddings
    from sentence_transformers.util import cos_sim

    scores = [o.outputs.score for o in default_llm.score("q", ["a", ""], use_tqdm=False)]
    ref = cos_sim(st_model.encode(["q"]), st_model.encode(["a", ""]))[0].tolist()
    np.testing.assert_allclose(scores, ref, atol=2e-5)
    _still_works(default_llm)


def test_lone_surrogates_are_named(default_llm):
    """Issue 15, item 7: not the tokenizer's "TextEncodeInput must be Union[...]"."""
    with pytest.raises(ValueError, match=r"prompts\[1\] is not valid Unicode: a lone surrogate '\\ud800'"):
        default_llm.embed(["ok", "a\ud800"], use_tqdm=False)
    with pytest.raises(ValueError, match=r"prompts\[0\]\['prompt'\] is not valid Unicode"):
        default_llm.embed([{"prompt": "\udc00"}], use_tqdm=False)
    with pytest.raises(ValueError, match=r"prompts\[1\]\['instruction'\] is not valid Unicode"):
        default_llm.embed(["ok", {"prompt": "hello", "instruction": "query: \ud800"}], use_tqdm=False)
    with pytest.raises(ValueError, match=r"data_2\[1\] is not valid Unicode"):
        default_llm.score("q", ["a", "b\udfff"], use_tqdm=False)
    assert len(default_llm.embed(["emoji \U0001f600 ok"], use_tqdm=False)) == 1  # a real pair is fine
    _still_works(default_llm)


@pytest.mark.parametrize(
    "valid, invalid, valid_error",
    [
        ({"truncate_prompt_tokens": 2}, {"truncate_prompt_tokens": 2.0}, None),
        # 1 is a valid value, too small for this tokenizer's two special tokens (a later check)
        (
            {"truncate_prompt_tokens": 1},
            {"truncate_prompt_tokens": True},
            "smaller than the 2 special tokens",
        ),
        (
            {"pooling_params": PoolingParams(truncate_prompt_tokens=3)},
            {"pooling_params": PoolingParams(truncate_prompt_tokens=3.0)},
            None,
        ),
    ],
)
def test_a_value_refused_stays_refused_after_an_equal_valid_one(default_llm, valid, invalid, valid_error):
    """Resolved params are cached: ``2.0 == 2`` and ``True == 1`` must not hit the entry of
    the valid value and skip the checks."""
    for _ in range(2):
        with pytest.raises(ValueError, match="truncate_prompt_tokens must be a positive integer"):
            default_llm.embed("hi there", use_tqdm=False, **invalid)
        if valid_error is None:
            default_llm.embed("hi there", use_tqdm=False, **valid)
        else:
            with pytest.raises(ValueError, match=valid_error):
                default_llm.embed("hi there", use_tqdm=False, **valid)
    _still_works(default_llm)
