"""The public annotations resolve at run time and say what the API accepts.

``typing.get_type_hints`` on the task methods (``self: LLM``, the prompt aliases), the ColBERT
retrievers' ``index`` (a ``MultiVectorIndex``, checked at construction). What a type checker
accepts (``mypy --strict`` on the README's prompt forms) is checked outside the test suite:
mypy is not a dev dependency.
"""

from __future__ import annotations

import typing

import pytest
from vllm_pool.engine.tasks import Prompts, ScoreInputs, TextPrompt, TokensPrompt

from vllm_pool import LLM

TASK_METHODS = ("encode", "embed", "classify", "reward", "encode_multi", "score")


@pytest.mark.parametrize("name", TASK_METHODS)
def test_task_method_hints_resolve(name):
    hints = typing.get_type_hints(getattr(LLM, name))  # was NameError: name 'LLM' is not defined
    assert hints["self"] is LLM


def test_encode_overload_hints_resolve():
    overloads = typing.get_overloads(LLM.encode) if hasattr(typing, "get_overloads") else []  # 3.11+
    for overload in overloads:
        assert typing.get_type_hints(overload)["self"] is LLM


@pytest.mark.parametrize("name", ["embed", "classify", "reward", "encode_multi"])
def test_prompts_are_typed(name):
    assert typing.get_type_hints(getattr(LLM, name))["prompts"] == Prompts


def test_score_inputs_are_typed():
    hints = typing.get_type_hints(LLM.score)
    assert hints["data_1"] == hints["data_2"] == ScoreInputs
    assert set(typing.get_args(ScoreInputs)) >= {str, TextPrompt, TokensPrompt}


def test_prompt_dicts_name_their_keys():
    assert (TextPrompt.__required_keys__, TextPrompt.__optional_keys__) == ({"prompt"}, {"instruction"})
    assert TokensPrompt.__required_keys__ == {"prompt_token_ids"}
    assert TokensPrompt.__optional_keys__ == {"attention_mask"}
    assert {str, TextPrompt, TokensPrompt} <= set(typing.get_args(Prompts))


def test_langchain_colbert_index_is_checked():
    pytest.importorskip("langchain_core")
    from pydantic import ValidationError
    from vllm_pool.integrations.langchain import VllmPoolColBERTRetriever
    from vllm_pool.retrievers import MultiVectorIndex

    assert VllmPoolColBERTRetriever.model_fields["index"].annotation == MultiVectorIndex | None
    with pytest.raises(ValidationError, match=r"(?s)index.*instance of MultiVectorIndex"):
        VllmPoolColBERTRetriever(index="x")


def test_llamaindex_colbert_index_is_checked():
    pytest.importorskip("llama_index.core")
    from vllm_pool.integrations.llamaindex import VllmPoolColBERTRetriever
    from vllm_pool.retrievers import MultiVectorIndex

    hints = typing.get_type_hints(VllmPoolColBERTRetriever.__init__)
    assert hints["index"] == MultiVectorIndex | None
    with pytest.raises(TypeError, match=r"index must be a vllm_pool\.retrievers\.MultiVectorIndex"):
        VllmPoolColBERTRetriever(index="x")
    with pytest.raises(TypeError, match="got str"):
        VllmPoolColBERTRetriever("x", model_name="any")  # the HuggingFace spelling path too


def test_prompt_types_exported_as_in_vllm(default_llm):
    """``from vllm import TextPrompt, TokensPrompt`` has the same spelling here."""
    from vllm_pool import TextPrompt, TokensPrompt

    outs = default_llm.embed(
        [TextPrompt(prompt="Hello"), TokensPrompt(prompt_token_ids=[101, 7592, 102])], use_tqdm=False
    )
    assert [len(o.prompt_token_ids) for o in outs] == [3, 3]
    assert outs[0].outputs.embedding == outs[1].outputs.embedding  # "Hello" is [CLS] hello [SEP]
