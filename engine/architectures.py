"""The architecture registry: ``{architecture: how to load it and build its poolers}``.

Adding an architecture is one :class:`Architecture` entry, registered under the names its
``config.json`` lists in ``architectures``: which transformers auto class loads the
checkpoint, which part of the loaded model the runner runs (the backbone), and a function
that builds the task poolers (heads read from the loaded model or the folder).

Architectures without an entry of their own use a generic entry chosen by ``convert``:
embedding models (``AutoModel``, Sentence Transformers Pooling / Dense / Normalize),
sequence classifiers, token classifiers, and causal LMs turned into classifiers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from vllm_pool.engine.classifier import sequence_classifier, token_classifier
from vllm_pool.engine.config import ModelConfig
from vllm_pool.engine.pooler import Pooler, TaskPoolers, bge_m3_poolers, classify_poolers, embed_poolers

PoolerBuilder = Callable[[ModelConfig, torch.nn.Module, Any], dict[str, Pooler]]
"""``(config, loaded task model, tokenizer) -> {task: Pooler}``."""


def _whole(model: torch.nn.Module) -> torch.nn.Module:
    return model


def _base_model(model: torch.nn.Module) -> torch.nn.Module:
    return model.base_model


@dataclass(frozen=True)
class Architecture:
    """How to build one architecture.

    Attributes:
        name: the entry's name (an ``architectures`` value for registered entries).
        auto_class: the transformers auto class that loads the checkpoint with the weights
            the heads need (``"AutoModel"``, ``"AutoModelForSequenceClassification"``...).
        build_poolers: ``(config, task model, tokenizer) -> {task: Pooler}``.
        backbone: the part of the loaded model that the runner runs (hidden states only;
            the heads are split off by the poolers).
    """

    name: str
    auto_class: str
    build_poolers: PoolerBuilder
    backbone: Callable[[torch.nn.Module], torch.nn.Module] = _whole


def _embed(cfg: ModelConfig, model: torch.nn.Module, tokenizer: Any) -> dict[str, Pooler]:
    return embed_poolers(cfg)


def _sequence_classify(cfg: ModelConfig, model: torch.nn.Module, tokenizer: Any) -> dict[str, Pooler]:
    step = str(cfg.pooler.pooling_type or "").upper() == "STEP"
    return classify_poolers(cfg, sequence_classifier(model, cfg.hf_config, tokenizer, cfg.hf_path, step))


def _token_classify(cfg: ModelConfig, model: torch.nn.Module, tokenizer: Any) -> dict[str, Pooler]:
    return classify_poolers(cfg, token_classifier(model, cfg.hf_config, cfg.hf_path))


def _bge_m3(cfg: ModelConfig, model: torch.nn.Module, tokenizer: Any) -> dict[str, Pooler]:
    return bge_m3_poolers(cfg)


EMBED = Architecture("embed", "AutoModel", _embed)
SEQUENCE_CLASSIFY = Architecture(
    "sequence-classify", "AutoModelForSequenceClassification", _sequence_classify, _base_model
)
TOKEN_CLASSIFY = Architecture(
    "token-classify", "AutoModelForTokenClassification", _token_classify, _base_model
)
LM_CLASSIFY = Architecture("lm-classify", "AutoModelForCausalLM", _sequence_classify, _base_model)

ARCHITECTURES: dict[str, Architecture] = {}
"""Registered architectures by ``config.json`` name; see :func:`register`."""


def register(entry: Architecture, *names: str) -> Architecture:
    """Register ``entry`` under ``names`` (default: ``entry.name``); return it."""
    for name in names or (entry.name,):
        ARCHITECTURES[name] = entry
    return entry


register(Architecture("BgeM3EmbeddingModel", "AutoModel", _bge_m3))


def resolve(cfg: ModelConfig) -> Architecture:
    """The entry of ``cfg``'s architecture: a registered one, else the generic one for its
    ``convert`` (classify: token, causal-LM or sequence classification by name)."""
    for name in cfg.architectures:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    if cfg.convert != "classify":
        return EMBED
    archs = cfg.architectures
    if getattr(cfg.hf_config, "classifier_from_token", None) or any(a.endswith("ForCausalLM") for a in archs):
        return LM_CLASSIFY
    if any(a.endswith("ForTokenClassification") for a in archs):
        return TOKEN_CLASSIFY
    return SEQUENCE_CLASSIFY


def build_poolers(
    cfg: ModelConfig, entry: Architecture, model: torch.nn.Module, tokenizer: Any
) -> TaskPoolers:
    """The checked task-to-pooler map of a loaded model.

    A Sentence Transformers ``Pooling`` module with ``include_prompt: false`` makes every
    sentence pooler skip the instruction tokens of a request (see ``Request.instruction_len``).
    """
    poolers = entry.build_poolers(cfg, model, tokenizer)
    if cfg.st is not None and not cfg.st.include_prompt:
        for pooler in poolers.values():
            pooler.include_instruction = False
    return TaskPoolers(cfg.name, poolers)
