"""encode_multi's per-task params: one truncation for the one forward pass (honoured for every
task, or a ValueError naming the tasks and values), and a TypeError for a wrong type."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from vllm_pool import LLM, PoolingParams

TEXT = "the cat and the dog in the tree"
TASKS = ["embed", "token_embed"]


@pytest.fixture(scope="module")
def llm(tiny_bert) -> LLM:
    return LLM(str(tiny_bert))


@pytest.fixture(scope="module")
def reference(tiny_bert):
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModel.from_pretrained(tiny_bert).eval()

    def hidden(n: int) -> tuple[list[int], torch.Tensor]:
        enc = tok(TEXT, truncation=True, max_length=n, return_tensors="pt")
        with torch.no_grad():
            return enc["input_ids"][0].tolist(), model(**enc).last_hidden_state[0]

    return hidden


def _check_cut(result, reference, n: int) -> None:
    ids, hidden = reference(n)
    for task in TASKS:
        assert result[task][0].prompt_token_ids == ids and len(ids) == n
    torch.testing.assert_close(result["token_embed"][0].outputs.data, F.normalize(hidden, dim=-1))
    torch.testing.assert_close(result["embed"][0].outputs.data, F.normalize(hidden[0], dim=-1))  # CLS


def test_same_truncation_for_every_task_is_honoured(llm, reference) -> None:
    params = {task: PoolingParams(truncate_prompt_tokens=4) for task in TASKS}
    _check_cut(llm.encode_multi([TEXT], TASKS, params, use_tqdm=False), reference, 4)


def test_truncation_argument_applies_to_every_task(llm, reference) -> None:
    params = {"token_embed": PoolingParams(truncate_prompt_tokens=3)}
    result = llm.encode_multi([TEXT], TASKS, params, use_tqdm=False, truncate_prompt_tokens=5)
    _check_cut(result, reference, 5)


@pytest.mark.parametrize(
    "params, first, second",
    [
        ({"token_embed": PoolingParams(truncate_prompt_tokens=3)}, "None for 'embed'", "3 for 'token_embed'"),
        (
            {
                "embed": PoolingParams(truncate_prompt_tokens=5),
                "token_embed": PoolingParams(truncate_prompt_tokens=3),
            },
            "5 for 'embed'",
            "3 for 'token_embed'",
        ),
    ],
)
def test_differing_truncations_are_refused(llm, params, first, second) -> None:
    with pytest.raises(ValueError, match=f"truncate_prompt_tokens differs: {first} and {second}"):
        llm.encode_multi([TEXT], TASKS, params, use_tqdm=False)


def test_a_list_of_params_is_a_type_error(llm) -> None:
    with pytest.raises(TypeError, match=r"pooling_params\['embed'\] must be one PoolingParams.*got list"):
        llm.encode_multi([TEXT], ["embed"], {"embed": [PoolingParams()]}, use_tqdm=False)


def test_params_not_a_dict_is_a_type_error(llm) -> None:
    with pytest.raises(TypeError, match=r"pooling_params of encode_multi must be a dict.*got PoolingParams"):
        llm.encode_multi([TEXT], ["embed"], PoolingParams(), use_tqdm=False)
