"""Activations applied after a pooling head: normalize, softmax, sigmoid, identity."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Activation = Callable[[torch.Tensor], torch.Tensor]


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalize the last dimension (Sentence Transformers' ``Normalize``)."""
    return F.normalize(x, p=2, dim=-1)


def softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x.float(), dim=-1).to(x.dtype)


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def torch_nn_activation(name: str) -> Activation:
    """Instantiate a ``torch.nn`` activation by class name (``"Tanh"``, ``"Sigmoid"``...).

    Only classes of ``torch.nn`` are accepted, so a config cannot name arbitrary code.
    """
    short = name.rsplit(".", 1)[-1]
    if name != short and not name.startswith("torch.nn."):
        raise ValueError(
            f"activation {name!r} is not a torch.nn module (loading it needs trust_remote_code=True)"
        )
    cls = getattr(torch.nn, short, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ValueError(f"activation {name!r} is not a torch.nn module")
    return cls()


def import_activation(path: str) -> Activation:
    """Instantiate an activation class from a dotted path (only with ``trust_remote_code``)."""
    import importlib

    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)()
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"Cannot import activation {path!r}: {e}") from e


def labels_activation(num_labels: int) -> Activation:
    """Sigmoid for one label, else softmax (vLLM's default classifier activation; its
    ``token_classify`` / ``reward`` always use this one)."""
    return sigmoid if num_labels < 2 else softmax


def classify_activation(hf_config: object, num_labels: int) -> Activation:
    """The ``classify`` activation, as vLLM chooses it from transformers' ``problem_type``:
    regression -> identity, multi-label -> sigmoid, otherwise by the label count. A
    CrossEncoder's ``activation_fn`` is for scores only (vLLM's ``act_fn="classify"``)."""
    problem_type = getattr(hf_config, "problem_type", None)
    if problem_type == "regression":
        return identity
    if problem_type == "multi_label_classification":
        return sigmoid
    return labels_activation(num_labels)


def score_activation(
    st_activation: str | None, num_labels: int, trust_remote_code: bool = False
) -> Activation:
    """The ``score`` activation, as vLLM and Sentence Transformers' CrossEncoder choose it:
    the folder's ``activation_fn`` (a ``torch.nn`` class; another class only with
    ``trust_remote_code``), otherwise by the label count; ``problem_type`` is not read."""
    if st_activation:
        if trust_remote_code and not st_activation.startswith("torch.nn."):
            return import_activation(st_activation)
        return torch_nn_activation(st_activation)
    return labels_activation(num_labels)
