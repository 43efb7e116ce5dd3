"""BGE-M3 (``BgeM3EmbeddingModel``): dense, sparse (lexical) and ColBERT heads on XLM-RoBERTa.

Load with ``hf_overrides={"architectures": ["BgeM3EmbeddingModel"]}``. The folder's
``sparse_linear.pt`` and ``colbert_linear.pt`` are read with ``torch.load(weights_only=True)``
(plain tensors, never arbitrary pickles).

- ``embed``: normalized CLS vector.
- ``token_classify``: per-token sparse weights ``relu(sparse_linear(h))``, shape ``[tokens]``.
- ``token_embed``: ColBERT vectors ``normalize(colbert_linear(h))`` for the tokens after the first.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from vllm_pool.engine.activations import normalize
from vllm_pool.engine.params import PoolingParams
from vllm_pool.engine.types import ModelNotFoundError

from vllm_pool.maxsim_kernel import segment_maxsim

ARCHITECTURE = "BgeM3EmbeddingModel"


def load_linear(path: Path, device: torch.device, dtype: torch.dtype) -> torch.nn.Linear:
    """A ``torch.nn.Linear`` from a ``{"weight", "bias"}`` state dict file (tensors only)."""
    if not path.is_file():
        raise ModelNotFoundError(f"BGE-M3 head file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"Cannot read the BGE-M3 head file {path}: {e}") from e
    if not isinstance(state, dict) or "weight" not in state:
        raise ValueError(f"{path} does not hold a Linear state dict with a 'weight' tensor")
    out_f, in_f = state["weight"].shape
    linear = torch.nn.Linear(in_f, out_f, bias="bias" in state)
    linear.load_state_dict(state)
    return linear.to(device, dtype).eval()


class SparseHead:
    """Per-token lexical weights: ``relu(linear(h))`` -> ``[tokens]``."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        self.linear = linear

    def resolve(self, params: PoolingParams) -> PoolingParams:
        params.check()
        return params.clone(use_activation=True if params.use_activation is None else params.use_activation)

    def __call__(self, x: torch.Tensor, params: PoolingParams) -> torch.Tensor:
        w = self.linear(x).squeeze(-1)
        return torch.relu(w) if params.use_activation else w


class ColbertHead:
    """ColBERT vectors of the tokens after the first: ``normalize(linear(h[1:]))``."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        self.linear = linear
        self.out_dim = linear.out_features

    def resolve(self, params: PoolingParams) -> PoolingParams:
        params.check()
        if params.dimensions is not None:
            raise ValueError("BGE-M3 ColBERT vectors do not support dimensions")
        return params.clone(normalize=True if params.normalize is None else params.normalize)

    def __call__(self, x: torch.Tensor, params: PoolingParams) -> torch.Tensor:
        v = self.linear(x[1:])
        return normalize(v) if params.normalize else v


def sparse_weights(
    token_ids: Iterable[int], weights: Iterable[float], skip_ids: Iterable[int | None] = ()
) -> dict[int, float]:
    """``{token_id: weight}``: the max over repeated ids, special tokens and zeros dropped.

    >>> sparse_weights([0, 7, 9, 7, 2], [0.5, 0.1, 0.3, 0.4, 0.9], skip_ids=[0, 2])
    {7: 0.4, 9: 0.3}
    """
    skip = {i for i in skip_ids if i is not None}
    out: dict[int, float] = {}
    for tid, w in zip(token_ids, weights):
        w = float(w)
        if tid in skip or w <= 0:
            continue
        if w > out.get(tid, 0.0):
            out[tid] = w
    return out


def lexical_score(a: dict[int, float], b: dict[int, float]) -> float:
    """Sum over shared tokens of the product of their weights.

    >>> lexical_score({1: 0.5, 2: 0.2}, {2: 0.5, 3: 1.0})
    0.1
    """
    return float(sum(w * b[t] for t, w in a.items() if t in b))


def colbert_score(query: torch.Tensor, doc: torch.Tensor) -> float:
    """MaxSim averaged over query tokens: ``mean_i max_j q_i . d_j`` (``[Lq, D]``, ``[Ld, D]``)."""
    lengths = np.array([len(doc)], dtype=np.int64)
    return float(segment_maxsim(query, doc, np.zeros(1, dtype=np.int64), lengths)[0, 0]) / len(query)
