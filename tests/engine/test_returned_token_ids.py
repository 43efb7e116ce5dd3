"""returned_token_ids must name label columns of the model: a ValueError naming the field, the
id and the label count, per request (PoolingParams) and at load (pooler_config)."""

from __future__ import annotations

import re

import pytest
from transformers import AutoConfig

from vllm_pool import LLM, PoolingParams

STEP = {"pooling_type": "STEP", "step_tag_id": 7}


@pytest.fixture(scope="module")
def bert3(tiny_bert_cls3):
    return tiny_bert_cls3


@pytest.fixture(scope="module")
def llm(bert3) -> LLM:
    return LLM(str(bert3), pooler_config=STEP)


def _message(name: str, index: int, bad: int, labels: int) -> str:
    return re.escape(f"{name}[{index}]={bad} is not a label of this model: it has {labels} labels")


@pytest.mark.parametrize("ids, index", [([5], 0), ([-1], 0), ([0, 3], 1), ([1, 2, -3], 2)])
def test_request_ids_outside_the_labels(llm, bert3, ids, index) -> None:
    labels = AutoConfig.from_pretrained(bert3).num_labels
    with pytest.raises(ValueError, match=_message("returned_token_ids", index, ids[index], labels)):
        llm.reward("a b a c a", PoolingParams(returned_token_ids=ids), use_tqdm=False)
    (o,) = llm.reward("a b a c a", PoolingParams(returned_token_ids=[labels - 1]), use_tqdm=False)
    assert o.outputs.data.shape[-1] == 1


def test_one_bad_params_fails_before_any_work(llm) -> None:
    params = [PoolingParams(returned_token_ids=[0]), PoolingParams(returned_token_ids=[3])]
    with pytest.raises(ValueError, match=_message("returned_token_ids", 0, 3, 3)):
        llm.reward(["a b", "b a"], params, use_tqdm=False)


@pytest.mark.parametrize("ids, index", [([9], 0), ([0, -1], 1)])
def test_pooler_config_ids_are_checked_at_load(bert3, ids, index) -> None:
    with pytest.raises(ValueError, match=_message("pooler_config.returned_token_ids", index, ids[index], 3)):
        LLM(str(bert3), pooler_config={**STEP, "returned_token_ids": ids})
