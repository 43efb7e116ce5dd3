"""Issue 14 items 5 and 6: PoolingParams aliases / type checks / STEP-only fields, and the
real output classes with vLLM's fields."""

from __future__ import annotations

import warnings

import pytest
import torch


@pytest.mark.parametrize("alias", ["activation", "softmax"])
def test_deprecated_activation_aliases(alias):
    from vllm_pool import PoolingParams

    with pytest.warns(DeprecationWarning, match=f"{alias}=.*deprecated; use use_activation"):
        params = PoolingParams(**{alias: False})
    assert params.use_activation is False
    assert getattr(params, alias) is None  # one spelling from here on
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ValueError, match="contradicts use_activation=True"):
            PoolingParams(use_activation=True, **{alias: False})
        assert PoolingParams(use_activation=True, **{alias: True}).use_activation is True


@pytest.fixture(scope="module")
def tiny_classifier(tiny_dir):
    import tiny_models

    return tiny_models.bert(tiny_dir / "bert_cls3_aliases", cls="BertForSequenceClassification", num_labels=3)


@pytest.mark.parametrize("alias", ["activation", "softmax"])
def test_deprecated_pooler_config_aliases(alias, tiny_classifier):
    """The same aliases in ``pooler_config`` warn as PoolingParams' do, and take effect."""
    from vllm_pool.engine.config import PoolerConfig

    from vllm_pool import LLM

    with pytest.warns(DeprecationWarning, match=f"pooler_config\\['{alias}'\\] is deprecated"):
        config = PoolerConfig.from_any({alias: False})
    assert config.use_activation is False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LLM(str(tiny_classifier), pooler_config={alias: False})
    assert sum("is deprecated" in str(w.message) for w in caught) == 1  # once per engine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ValueError, match="sets use_activation to both True and False"):
            PoolerConfig.from_any({"use_activation": True, alias: False})
        assert PoolerConfig.from_any({"use_activation": True, alias: True}).use_activation is True
        raw = LLM(str(tiny_classifier), pooler_config={alias: False}).classify(["a text"], use_tqdm=False)
    probs = LLM(str(tiny_classifier)).classify(["a text"], use_tqdm=False)
    assert not torch.allclose(raw[0].outputs.data, probs[0].outputs.data)  # logits, not probabilities
    torch.testing.assert_close(torch.softmax(raw[0].outputs.data, -1), probs[0].outputs.data)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"normalize": "yes"}, "normalize must be a bool or None, got str 'yes'"),
        ({"normalize": 0}, "normalize must be a bool or None, got int 0"),
        ({"use_activation": 1}, "use_activation must be a bool or None, got int 1"),
        ({"dimensions": "3"}, "dimensions must be an integer or None, got str '3'"),
        ({"dimensions": True}, "dimensions must be an integer or None, got bool True"),
        ({"dimensions": 3.0}, "dimensions must be an integer or None, got float 3.0"),
        ({"step_tag_id": "7"}, "step_tag_id must be an integer or None"),
        ({"returned_token_ids": 3}, "returned_token_ids must be a list of integers, got int"),
        ({"returned_token_ids": [1, "2"]}, r"returned_token_ids\[1\] must be an integer"),
    ],
)
def test_wrong_types_are_rejected(kwargs, message):
    from vllm_pool import PoolingParams

    with pytest.raises(TypeError, match=message):
        PoolingParams(**kwargs)


def test_step_fields_need_step_pooling(tiny_qwen2):
    """vLLM: step_tag_id / returned_token_ids on a non-STEP pooler raise; with STEP they work."""
    from vllm_pool import LLM, PoolingParams

    llm = LLM(str(tiny_qwen2), convert="classify", pooler_config={"pooling_type": "STEP"})
    (out,) = llm.reward("a b c", PoolingParams(step_tag_id=5, returned_token_ids=[1, 2]), use_tqdm=False)
    assert out.outputs.data.shape[-1] == 2
    embedder = LLM(str(tiny_qwen2))  # LAST pooling: token_embed uses ALL
    for field in ({"step_tag_id": 5}, {"returned_token_ids": [1]}):
        with pytest.raises(ValueError, match=r"Task token_embed only supports \['dimensions', 'normalize'\]"):
            embedder.encode("a b c", PoolingParams(**field), pooling_task="token_embed", use_tqdm=False)
    assert embedder.encode("a b c", pooling_task="token_embed", use_tqdm=False)  # still usable


def test_resolved_params_are_kept_by_value(default_llm):
    """A pooler resolves equal params once and shares the result (a server sends the same
    few params with every request); different values, or the call's truncation, resolve
    anew, and bad params are refused every time (never kept)."""
    import dataclasses

    from vllm_pool import PoolingParams

    pooler = default_llm.poolers.get("embed")
    first = pooler.resolve(PoolingParams(normalize=False))
    assert pooler.resolve(PoolingParams(normalize=False)) is first and first.normalize is False
    assert pooler.resolve(PoolingParams()).normalize is True  # the model's Normalize module
    cut = pooler.resolve(PoolingParams(normalize=False), 8)
    assert cut is not first and cut.truncate_prompt_tokens == 8 and cut.normalize is False
    assert pooler.resolve(PoolingParams(normalize=False, truncate_prompt_tokens=8)) == cut
    for _ in range(2):
        with pytest.raises(ValueError, match="Task embed only supports"):
            pooler.resolve(PoolingParams(use_activation=True))
    # every field takes part in the key: params that differ in any field never share a result
    base = PoolingParams().key()
    changed = {"truncate_prompt_tokens": 4, "dimensions": 8, "normalize": True, "use_activation": True,
               "step_tag_id": 3, "returned_token_ids": [1], "activation": True, "softmax": True}  # fmt: skip
    assert set(changed) == {f.name for f in dataclasses.fields(PoolingParams)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for name, value in changed.items():
            assert PoolingParams(**{name: value}).key() != base, name


def test_output_classes(default_llm):
    import vllm_pool
    from vllm_pool import (
        ClassificationOutput,
        ClassificationRequestOutput,
        EmbeddingOutput,
        EmbeddingRequestOutput,
        PoolingOutput,
        PoolingRequestOutput,
        ScoringOutput,
        ScoringRequestOutput,
        output_lists,
        stack_outputs,
    )

    for name in ("EmbeddingRequestOutput", "ClassificationRequestOutput", "ScoringRequestOutput"):
        assert name in vllm_pool.__all__
    outs = default_llm.embed(["hello", "world"], use_tqdm=False)
    for o in outs:
        assert isinstance(o, EmbeddingRequestOutput) and isinstance(o, PoolingRequestOutput)
        assert not isinstance(o, ScoringRequestOutput)
        assert o.num_cached_tokens == 0 and o.finished is True and isinstance(o.request_id, str)
        assert o.prompt_token_ids[0] == default_llm.get_tokenizer().cls_token_id
    assert stack_outputs(outs).shape == (2, 384)
    assert output_lists(outs)[1] == pytest.approx(outs[1].outputs.embedding)
    scores = default_llm.score("a", ["b", "c"], use_tqdm=False)
    assert all(type(s) is ScoringRequestOutput for s in scores)
    raw = default_llm.encode("hello", pooling_task="embed", use_tqdm=False)
    assert type(raw[0]) is PoolingRequestOutput and isinstance(raw[0].outputs, PoolingOutput)
    # from_base, as vLLM's: the base output's fields, the task's output class
    emb = EmbeddingRequestOutput.from_base(raw[0])
    assert type(emb.outputs) is EmbeddingOutput and emb.request_id == raw[0].request_id
    assert emb.outputs.embedding == pytest.approx(outs[0].outputs.embedding, abs=1e-6)
    probs = PoolingRequestOutput("x", PoolingOutput(torch.tensor([0.2, 0.8])), [1, 2], num_cached_tokens=1)
    cls = ClassificationRequestOutput.from_base(probs)
    assert isinstance(cls.outputs, ClassificationOutput) and cls.outputs.num_classes == 2
    assert cls.num_cached_tokens == 1 and cls.prompt_token_ids == [1, 2]
    one = PoolingRequestOutput("y", PoolingOutput(torch.tensor([0.5])), [3])
    assert ScoringRequestOutput.from_base(one).outputs == ScoringOutput(0.5)
