"""Packed variable-length batches: every prompt's tokens in one row, no padding computed.

A packed batch is one ``[1, total_tokens]`` row. Each prompt keeps its own position ids,
and attention stays inside each prompt through cumulative sequence lengths
(``cu_seq_lens``), which transformers passes down to the attention function of every
layer. The attention function registered here runs Flash Attention's variable-length
kernel (``torch.nn.attention.varlen``) on CUDA in half precision, and otherwise runs
``scaled_dot_product_attention`` per group of equal-length prompts, so the CPU exercises
the same code path as the GPU.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
from typing import Any

import torch
import torch.nn.functional as F
from vllm_pool.engine import bucket_attention

logger = logging.getLogger(__name__)

ATTN_IMPLEMENTATION = "vllm_pool_varlen"


def flash_kernel(query: torch.Tensor) -> Any:
    """Flash Attention's variable-length kernel for ``query``, or None (CPU, fp32, older torch)."""
    if not query.is_cuda or query.dtype not in (torch.float16, torch.bfloat16):
        return None
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # torch without the varlen flash kernel
        return None
    return varlen_attn


CPU_DTYPES = (torch.float32, torch.bfloat16)
"""Dtypes packed by default on the CPU (``benchmarks/results/packed_cpu.json``)."""


def default_on(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether packing is the default (``packed=None``) for ``dtype`` on ``device``.

    On the CPU for :data:`CPU_DTYPES`: no compute on padding, measured faster than padded
    batches on mixed and short texts alike. On a GPU where the varlen flash kernel runs
    (CUDA, fp16 / bf16). The one rule of ``LLM`` and ``vllm-pool serve``.
    """
    if device.type == "cpu":
        return dtype in CPU_DTYPES
    return flash_kernel(torch.empty(0, dtype=dtype, device=device)) is not None


def _segments_sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bounds: list[int],
    scaling: float | None,
    causal: bool,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """SDPA inside each segment ``bounds[i]:bounds[i+1]``; equal lengths run as one batch.

    ``query`` is ``[heads, tokens, dim]``; returns ``[tokens, heads, dim]``. ``key_mask``
    (``[tokens]`` bool) marks the positions that may be attended to.
    """
    out = query.new_empty(query.shape[1], query.shape[0], value.shape[-1])
    by_len: dict[int, list[int]] = {}
    for i in range(len(bounds) - 1):
        by_len.setdefault(bounds[i + 1] - bounds[i], []).append(bounds[i])
    for length, starts in by_len.items():
        n = len(starts)
        if all(b - a == length for a, b in zip(starts, starts[1:])):
            sel: slice | torch.Tensor = slice(starts[0], starts[0] + length * n)  # a view, no gather
        else:
            sel = torch.cat([torch.arange(s, s + length) for s in starts]).to(query.device)
        q, k, v = (t[:, sel].unflatten(1, (n, length)).transpose(0, 1) for t in (query, key, value))
        if key_mask is None:
            o = F.scaled_dot_product_attention(q, k, v, scale=scaling, is_causal=causal)
        else:
            allowed = key_mask[sel].view(n, 1, 1, length)  # [n, 1, 1 (queries), length (keys)]
            if causal:
                allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scaling)
        out[sel] = o.permute(0, 2, 1, 3).reshape(-1, o.shape[1], o.shape[-1])
    return out


@functools.lru_cache(maxsize=4)
def _parameters(fn: Any) -> frozenset[str]:
    return frozenset(inspect.signature(fn).parameters)


def call_flash(
    flash: Any,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu: torch.Tensor,
    longest: int,
    scaling: float | None,
    causal: bool,
    cu_k: torch.Tensor | None = None,
    longest_k: int | None = None,
) -> torch.Tensor:
    """Call ``varlen_attn`` with ``[heads, tokens, dim]`` inputs; returns ``[tokens, heads, dim]``.

    ``cu_k`` / ``longest_k`` describe the key segments when they differ from the query ones
    (keys gathered to the attended positions); default: the same as the queries.

    Adapts to the signatures torch has shipped: ``is_causal`` without ``scale`` (2.9-2.10),
    then ``scale`` / ``window_size``, then ``enable_gqa``. Without ``scale`` the query is
    rescaled so the kernel's default ``1/sqrt(dim)`` gives the model's scaling; without
    ``enable_gqa`` the key/value heads are repeated.
    """
    params = _parameters(flash)
    kwargs: dict[str, Any] = {}
    groups = q.shape[0] // k.shape[0]
    if "enable_gqa" in params:
        kwargs["enable_gqa"] = groups > 1
    elif groups > 1:
        k, v = k.repeat_interleave(groups, dim=0), v.repeat_interleave(groups, dim=0)
    if "scale" in params:
        kwargs["scale"] = scaling
    elif scaling is not None:
        q = q * (scaling * q.shape[-1] ** 0.5)
    if "window_size" in params:
        kwargs["window_size"] = (-1, 0) if causal else (-1, -1)
    else:
        kwargs["is_causal"] = causal
    cu32 = cu.to(torch.int32)
    cu32_k = cu32 if cu_k is None else cu_k.to(torch.int32)
    t = (q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1))
    return flash(*t, cu32, cu32_k, longest, longest if longest_k is None else longest_k, **kwargs)


def varlen_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """A transformers attention function for packed rows (``[1, heads, tokens, dim]`` inputs).

    Reads ``cu_seq_lens_q`` / ``max_length_q`` from the layer's keyword arguments; without
    them (an unpacked call) the row is one sequence.
    """
    if query.shape[0] != 1:
        raise ValueError(f"packed attention expects one packed row, got a batch of {query.shape[0]}")
    causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", False))
    q, k, v = query[0], key[0], value[0]
    cu = kwargs.get("cu_seq_lens_q")
    key_index = kwargs.get("packed_key_index")  # prompts with positions not attended to
    flash = flash_kernel(q) if cu is not None else None
    if flash is not None and key_index is not None and causal:
        flash = None  # a decoder's masked prompts: the SDPA path (keys gathered would break causality)
    if flash is not None and key_index is not None:
        k, v = k.index_select(1, key_index), v.index_select(1, key_index)
        longest = int(kwargs["max_length_q"])
        out = call_flash(
            flash, q, k, v, cu, longest, scaling, causal, kwargs["cu_seq_lens_k"], int(kwargs["max_length_k"])
        )
    elif flash is not None:
        out = call_flash(flash, q, k, v, cu, int(kwargs["max_length_q"]), scaling, causal)
    else:
        groups = q.shape[0] // k.shape[0]
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=0), v.repeat_interleave(groups, dim=0)
        bounds: list[int] = kwargs.get("packed_bounds") or (
            cu.tolist() if cu is not None else [0, query.shape[2]]
        )
        cache = kwargs.get("packed_plan")  # per batch: padded buckets, planned by the first layer
        if cache is not None:
            if "buckets" not in cache:
                key_mask = kwargs.get("packed_key_mask")
                cache["buckets"] = bucket_attention.plan(bounds, causal, key_mask, q.device)
            out = bucket_attention.bucket_sdpa(q, k, v, *cache["buckets"], scaling)
        else:
            out = _segments_sdpa(q, k, v, bounds, scaling, causal, kwargs.get("packed_key_mask"))
    return out.unsqueeze(0), None


def register() -> None:
    """Register :func:`varlen_attention` with transformers (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, varlen_attention)


def use_packed_attention(model: torch.nn.Module) -> str:
    """Route ``model``'s attention through :func:`varlen_attention`; returns the previous implementation."""
    register()
    previous = str(model.config._attn_implementation)
    model.config._attn_implementation = ATTN_IMPLEMENTATION
    return previous


def restore_attention(model: torch.nn.Module, previous: str) -> None:
    model.config._attn_implementation = previous


def position_offset(model: torch.nn.Module) -> int:
    """Where position ids start: ``padding_idx + 1`` for RoBERTa-style embeddings, else 0."""
    emb = getattr(model, "embeddings", None)
    pad = getattr(emb, "padding_idx", None)
    return int(pad) + 1 if isinstance(pad, int) and hasattr(emb, "position_embeddings") else 0


def supports_packing(model: torch.nn.Module, max_len: int | None = None) -> bool:
    """Whether the model routes attention through transformers' attention interface, with
    no sliding window shorter than ``max_len`` (packed attention attends to whole prompts;
    padded batches keep transformers' own windowed masks)."""
    window = sliding_window(getattr(model, "config", None))
    if window is not None and (max_len is None or window < max_len):
        return False
    return bool(getattr(model, "_supports_attention_backend", False))


def sliding_window(config: Any) -> int | None:
    """The attention window of a model whose layers use one (Mistral, Qwen2 with
    ``use_sliding_window``), else None."""
    window = getattr(config, "sliding_window", None)
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        return None
    if getattr(config, "use_sliding_window", True) is False:
        return None
    types = getattr(config, "layer_types", None)
    if isinstance(types, (list, tuple)) and "sliding_attention" not in types:
        return None
    return window


def attention_kwargs(bounds: list[int], longest: int) -> dict[str, Any]:
    """The keyword arguments that carry segment bounds down to :func:`varlen_attention`.

    ``cu_seq_lens_q`` / ``cu_seq_lens_k`` (device tensors) are added by the caller;
    ``packed_bounds`` keeps the host copy so the CPU path never reads the device, and
    ``packed_plan`` (empty) keeps the CPU path's bucket plan from one layer to the next.
    """
    return {"max_length_q": longest, "max_length_k": longest, "packed_bounds": bounds, "packed_plan": {}}


def key_mask(masks: list[list[int]]) -> tuple[dict[str, torch.Tensor], int]:
    """Host tensors for prompts whose ``masks`` (0 / 1 per token) leave positions unattended.

    Returns ``packed_key_mask`` (``[total_tokens]`` bool, the SDPA path), ``packed_key_index``
    (the attended flat positions) and ``cu_seq_lens_k`` (their per-prompt bounds; the flash
    path gathers keys and values to them), and the longest attended span.
    """
    flat = torch.tensor(list(itertools.chain.from_iterable(masks)), dtype=torch.bool)
    counts = torch.tensor([sum(m) for m in masks])
    cu_k = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
    tensors = {
        "packed_key_mask": flat,
        "packed_key_index": flat.nonzero().squeeze(1),
        "cu_seq_lens_k": cu_k,
    }
    return tensors, int(counts.max())


ROW_STEPS = 16
"""Packed row lengths per doubling of the token count (:func:`row_length`)."""


def row_length(tokens: int) -> int:
    """The row length a packed batch of ``tokens`` tokens is filled up to, where the device
    builds a kernel per matrix shape (the CPU in half precision, :func:`fills_rows`): one of
    :data:`ROW_STEPS` lengths per doubling, multiples of 16 at least (64 lengths up to 2,048
    tokens), so a row carries at most 1/16 more tokens than its prompts."""
    step = max(16, 1 << max(0, (tokens - 1).bit_length() - ROW_STEPS.bit_length()))
    return -(-tokens // step) * step


def fillers(tokens: int, budget: int | None, longest: int) -> list[int]:
    """Lengths of the filler segments that bring a packed row of ``tokens`` tokens up to its
    :func:`row_length`, but not past ``budget`` (the token budget it was scheduled under),
    each at most ``longest`` tokens (the model's position limit): empty when the row is full."""
    target = row_length(tokens)
    if budget is not None:
        target = max(tokens, min(target, budget))
    rest, pieces = target - tokens, []
    while rest > 0:
        pieces.append(min(rest, longest))
        rest -= pieces[-1]
    return pieces


def fills_rows(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether packed rows are filled up to :func:`row_length` for ``dtype`` on ``device``.

    On the CPU in bf16 / fp16: oneDNN builds (JIT-compiles) its GEMM kernels for each row
    count it meets, 20-40 ms per linear shape on an AMX Xeon against 3-9 ms for the GEMM
    itself, so a batch whose token count is new ran at a fraction of the speed of one seen
    before; rows of a few fixed lengths meet at most 64 row counts up to 2,048 tokens (README,
    "Benchmarks"). fp32 kernels showed no such cost, and CUDA runs packed rows as they are.
    """
    return device.type == "cpu" and dtype in (torch.bfloat16, torch.float16)


def pack(
    token_ids: list[list[int]], token_type_ids: list[list[int] | None] | None, offset: int
) -> dict[str, torch.Tensor]:
    """Host tensors of one packed row: ``input_ids``, ``position_ids`` (from ``offset`` in
    each prompt) and, for text pairs, ``token_type_ids``; each ``[1, total_tokens]``."""
    sizes = [len(t) for t in token_ids]
    lens = torch.tensor(sizes)
    starts = torch.repeat_interleave(torch.cumsum(lens, 0) - lens, lens)
    tensors = {
        "input_ids": torch.tensor(list(itertools.chain.from_iterable(token_ids))).unsqueeze(0),
        "position_ids": (torch.arange(len(starts)) - starts + offset).unsqueeze(0),
    }
    if token_type_ids is not None and any(t is not None for t in token_type_ids):
        tensors["token_type_ids"] = torch.tensor(
            [[x for t, n in zip(token_type_ids, sizes) for x in (t if t is not None else [0] * n)]]
        )
    return tensors
