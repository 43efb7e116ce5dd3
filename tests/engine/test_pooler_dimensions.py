"""pooler_config's ``dimensions`` is each request's default, checked as the request's own (vLLM
merges it into the request's params, then raises its Matryoshka errors per request)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vllm_pool import LLM, PoolingParams


def _error(call) -> str:
    with pytest.raises(ValueError) as e:
        call()
    return str(e.value)


@pytest.mark.parametrize("task", ["embed", "token_embed"])
def test_default_dimensions_on_a_model_without_matryoshka(tiny_bert, task) -> None:
    plain = LLM(str(tiny_bert))
    want = _error(lambda: plain.encode("hi", PoolingParams(dimensions=8), pooling_task=task, use_tqdm=False))
    assert "does not support matryoshka representation" in want
    llm = LLM(str(tiny_bert), pooler_config={"dimensions": 8})
    assert _error(lambda: llm.encode("hi", pooling_task=task, use_tqdm=False)) == want
    assert (
        _error(lambda: llm.encode("hi", PoolingParams(dimensions=4), pooling_task=task, use_tqdm=False))
        == want
    )
    # a request that asks for nothing but the model's own size still fails: the default is always merged
    assert _error(lambda: llm.embed(["a", "b"], use_tqdm=False)) == want


def test_default_dimensions_outside_the_listed_sizes(tiny_bert) -> None:
    llm = LLM(
        str(tiny_bert), hf_overrides={"matryoshka_dimensions": [16, 32]}, pooler_config={"dimensions": 8}
    )
    msg = _error(lambda: llm.embed("hi", use_tqdm=False))
    assert msg.endswith(
        "only supports [16, 32] matryoshka dimensions, use other output dimensions will lead to poor results."
    )


def test_default_dimensions_in_the_listed_sizes_match_the_reference(default_model_dir, st_model) -> None:
    llm = LLM(
        str(default_model_dir),
        hf_overrides={"matryoshka_dimensions": [16, 32]},
        pooler_config={"dimensions": 16},
    )
    texts = ["Follow the white rabbit.", "Matryoshka dolls nest inside each other."]
    outs = llm.embed(texts, use_tqdm=False)
    # ST's folder normalizes before any cut: the raw mean pooling, sliced, then normalized
    raw = st_model.encode(texts, convert_to_tensor=True, output_value="token_embeddings")
    masks = [st_model.tokenize([t])["attention_mask"][0] for t in texts]
    ref = torch.stack([(r * m[:, None]).sum(0) / m.sum() for r, m in zip(raw, masks)])
    want = F.normalize(ref[:, :16], dim=-1)
    torch.testing.assert_close(
        torch.tensor([o.outputs.embedding for o in outs]), want.cpu(), atol=1e-4, rtol=1e-4
    )
