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
        raise ValueError(f"activation {name!r} is not a torch.nn module")
    cls = getattr(torch.nn, short, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ValueError(f"activation {name!r} is not a torch.nn module")
    return cls()
