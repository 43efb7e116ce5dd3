"""BGE-M3 (``BgeM3EmbeddingModel``): dense, sparse (lexical) and ColBERT heads on XLM-RoBERTa.

Load with ``hf_overrides={"architectures": ["BgeM3EmbeddingModel"]}``. The folder's
``sparse_linear.pt`` and ``colbert_linear.pt`` are read with ``torch.load(weights_only=True)``
(plain tensors, never arbitrary pickles).

- ``embed``: normalized CLS vector.
- ``token_classify``: per-token sparse weights ``relu(sparse_linear(h))`` of the tokens between
  BOS and EOS, shape ``[tokens - 2]`` (as vLLM: the BOS / EOS weights are left out).
- ``token_embed``: ColBERT vectors ``normalize(colbert_linear(h))`` of the tokens after BOS.

:func:`lexical_weights` turns a sparse output into FlagEmbedding's ``lexical_weights``
(``{token_id: weight}``: CLS / EOS / PAD / UNK dropped, zeros dropped, max over repeats) and
:func:`lexical_score` is FlagEmbedding's ``compute_lexical_matching_score``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

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
    """ColBERT vectors ``normalize(linear(h))`` (the pooler leaves out the BOS row)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        self.linear = linear
        self.out_dim = linear.out_features

    def resolve(self, params: PoolingParams) -> PoolingParams:
        params.check()
        if params.dimensions is not None:
            raise ValueError("BGE-M3 ColBERT vectors do not support dimensions")
        return params.clone(normalize=True if params.normalize is None else params.normalize)

    def __call__(self, x: torch.Tensor, params: PoolingParams) -> torch.Tensor:
        v = self.linear(x)
        return normalize(v) if params.normalize else v


def sparse_weights(
    token_ids: Sequence[int], weights: Sequence[float], skip_ids: Iterable[int | None] = ()
) -> dict[int, float]:
    """``{token_id: weight}``: the max over repeated ids, ``skip_ids`` and zeros dropped.

    ``weights`` is either one value per token id, or the engine's sparse output (one value
    per token between a leading and a trailing special token, ``len(token_ids) - 2`` values,
    or ``- 1`` when only one end was a special token), aligned with the ids here.

    >>> sparse_weights([0, 7, 9, 7, 2], [0.5, 0.1, 0.3, 0.4, 0.9], skip_ids=[0, 2])
    {7: 0.4, 9: 0.3}
    >>> sparse_weights([0, 7, 9, 7, 2], [0.1, 0.3, 0.4], skip_ids=[0, 2])
    {7: 0.4, 9: 0.3}
    """
    skip = {i for i in skip_ids if i is not None}
    ids = list(token_ids)
    values = list(weights)
    if len(values) < len(ids):  # the engine's output: the BOS / EOS rows were left out
        if ids and ids[0] in skip and len(values) < len(ids) - (ids[-1] in skip):
            ids = ids[1:]
        ids = ids[: len(values)]
    if len(values) != len(ids):
        raise ValueError(f"{len(values)} weights do not match {len(token_ids)} token ids")
    out: dict[int, float] = {}
    for tid, w in zip(ids, values):
        w = float(w)
        if tid in skip or w <= 0:
            continue
        if w > out.get(tid, 0.0):
            out[tid] = w
    return out


def lexical_weights(output: Any, tokenizer: Any) -> dict[int, float]:
    """FlagEmbedding's ``lexical_weights`` of one ``token_classify`` output of BGE-M3.

    Args:
        output: a :class:`~vllm_pool.engine.outputs.PoolingRequestOutput` of the
            ``token_classify`` task (its ``prompt_token_ids`` and ``outputs.data``).
        tokenizer: the model's tokenizer (``LLM.get_tokenizer()``): its CLS, EOS, PAD and UNK
            ids are dropped, as FlagEmbedding's ``unused_tokens``.

    Returns:
        ``{token_id: weight}`` with positive weights only, the max over repeated ids.
    """
    unused = [getattr(tokenizer, f"{name}_token_id", None) for name in ("cls", "eos", "pad", "unk")]
    return sparse_weights(output.prompt_token_ids, output.outputs.data.reshape(-1).tolist(), unused)


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
