"""Ported from vLLM ``tests/test_pooling_params.py`` (the version with ``normalize`` /
``use_activation`` and ``verify(task=..., model_config=...)``).

Adapted: hub models -> tiny models (``e5_small`` non-Matryoshka, ``arctic_matryoshka`` with
``matryoshka_dimensions=[16]`` instead of [256]); ``ModelConfig(...)`` -> the loaded
``LLM(...).model_config``. vLLM's ``test_task`` is not ported: our ``PoolingParams`` has no
``task`` field (the task is the API called).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from vllm_pool import LLM, PoolerConfig, PoolingParams


@dataclass
class EmbedModelInfo:
    fixture: str
    is_matryoshka: bool = False
    matryoshka_dimensions: list[int] | None = None


EMBEDDING_MODELS = [
    EmbedModelInfo("e5_small", is_matryoshka=False),
    EmbedModelInfo("arctic_matryoshka", is_matryoshka=True, matryoshka_dimensions=[16]),
]

classify_parameters = ["use_activation"]
embed_parameters = ["dimensions", "normalize"]
step_pooling_parameters = ["step_tag_id", "returned_token_ids"]


@dataclass()
class MockModelConfig:
    pooler_config: PoolerConfig


def test_embed():
    """vLLM ``test_embed``: unchanged."""
    task = "embed"
    model_config = MockModelConfig(pooler_config=PoolerConfig(pooling_type="CLS"))

    pooling_params = PoolingParams(normalize=None)
    pooling_params.verify(task=task, model_config=model_config)

    pooling_params = PoolingParams(normalize=True)
    pooling_params.verify(task=task, model_config=model_config)

    pooling_params = PoolingParams(normalize=False)
    pooling_params.verify(task=task, model_config=model_config)

    invalid_parameters = classify_parameters + step_pooling_parameters
    for p in invalid_parameters:
        with pytest.raises(ValueError):
            pooling_params = PoolingParams(**{p: True})
            pooling_params.verify(task=task, model_config=model_config)


@pytest.mark.parametrize("model_info", EMBEDDING_MODELS)
def test_embed_dimensions(model_info: EmbedModelInfo, request):
    """vLLM ``test_embed_dimensions``: the model config comes from a loaded tiny model."""
    task = "embed"
    hf_overrides = None
    if model_info.is_matryoshka:
        hf_overrides = {"matryoshka_dimensions": model_info.matryoshka_dimensions}
    folder = request.getfixturevalue(model_info.fixture)
    model_config = LLM(str(folder), hf_overrides=hf_overrides).model_config

    pooling_params = PoolingParams(dimensions=None)
    pooling_params.verify(task=task, model_config=model_config)

    with pytest.raises(ValueError):
        pooling_params = PoolingParams(dimensions=1)
        pooling_params.verify(task=task, model_config=model_config)

    if model_info.is_matryoshka:
        assert model_info.matryoshka_dimensions is not None
        pooling_params = PoolingParams(dimensions=model_info.matryoshka_dimensions[0])
        pooling_params.verify(task=task, model_config=model_config)


@pytest.mark.parametrize("task", ["score", "classify"])
def test_classify(task):
    """vLLM ``test_classify``: unchanged."""
    model_config = MockModelConfig(pooler_config=PoolerConfig(pooling_type="CLS"))

    pooling_params = PoolingParams(use_activation=None)
    pooling_params.verify(task=task, model_config=model_config)

    pooling_params = PoolingParams(use_activation=True)
    pooling_params.verify(task=task, model_config=model_config)

    pooling_params = PoolingParams(use_activation=False)
    pooling_params.verify(task=task, model_config=model_config)

    invalid_parameters = embed_parameters + step_pooling_parameters
    for p in invalid_parameters:
        with pytest.raises(ValueError):
            pooling_params = PoolingParams(**{p: True})
            pooling_params.verify(task=task, model_config=model_config)


@pytest.mark.parametrize("pooling_type", ["ALL", "STEP"])
def test_token_embed(pooling_type: str):
    """vLLM ``test_token_embed``: unchanged."""
    task = "token_embed"
    model_config = MockModelConfig(pooler_config=PoolerConfig(pooling_type=pooling_type))

    pooling_params = PoolingParams(normalize=None)
    pooling_params.verify(task=task, model_config=model_config)

    pooling_params = PoolingParams(normalize=True)
    pooling_params.verify(task=task, model_config=model_config)

    pooling_params = PoolingParams(normalize=False)
    pooling_params.verify(task=task, model_config=model_config)

    invalid_parameters = classify_parameters
    if pooling_type != "STEP":
        invalid_parameters = classify_parameters + step_pooling_parameters

    for p in invalid_parameters:
        with pytest.raises(ValueError):
            pooling_params = PoolingParams(**{p: True})
            pooling_params.verify(task=task, model_config=model_config)


@pytest.mark.parametrize("pooling_type", ["ALL", "STEP"])
def test_token_classify(pooling_type: str):
    """vLLM ``test_token_classify``: unchanged."""
    task = "token_classify"
    model_config = MockModelConfig(pooler_config=PoolerConfig(pooling_type=pooling_type))

    pooling_params = PoolingParams(use_activation=None)
    pooling_params.verify(task=task, model_config=model_config)

    pooling_params = PoolingParams(use_activation=True)
    pooling_params.verify(task=task, model_config=model_config)

    pooling_params = PoolingParams(use_activation=False)
    pooling_params.verify(task=task, model_config=model_config)

    invalid_parameters = embed_parameters
    if pooling_type != "STEP":
        invalid_parameters = embed_parameters + step_pooling_parameters

    for p in invalid_parameters:
        with pytest.raises(ValueError):
            pooling_params = PoolingParams(**{p: True})
            pooling_params.verify(task=task, model_config=model_config)
