"""Prepacked oneDNN linear layers for CPU inference (what inductor's freezing does, in eager).

On a CPU, ``F.linear`` hands oneDNN / MKL a plain row-major weight and pays for re-blocking
it on every call; a weight reordered once into oneDNN's blocked layout runs the same GEMM
10-15% faster, and the FFN's GELU can run inside the GEMM's epilogue. :func:`prepack`
swaps the transformer layers' ``nn.Linear`` modules for :class:`PackedLinear` (and fuses
exact GELU into the FFN's first linear where that pays, :func:`gelu_epilogue_pays`), after
checking on random inputs that the oneDNN op gives what ``F.linear`` gives. Heads and
poolers outside the layers keep their modules.

BERT-style output blocks (``LayerNorm(dense(x) + residual)``, twice per layer) become
:class:`ResidualLinearNorm`: the residual add runs in the GEMM's epilogue too, one pass over
the activations fewer per block; each swap is checked against the block it replaces.
"""

from __future__ import annotations

import logging
import re

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

_LAYER = re.compile(r"(^|\.)(layer|layers|h|block|blocks)\.\d+\.")


def available(dtype: torch.dtype) -> bool:
    """Whether this torch has the oneDNN linear ops for ``dtype`` on this CPU (bf16 needs
    AVX-512 or AVX-NE-CONVERT: on an AVX2-only CPU oneDNN refuses to reorder a bf16 weight)."""
    if dtype not in (torch.float32, torch.bfloat16) or not torch.backends.mkldnn.is_available():
        return False
    ops = torch.ops.mkldnn
    if not (hasattr(ops, "_linear_pointwise") and hasattr(ops, "_reorder_linear_weight")):
        return False
    return dtype != torch.bfloat16 or half_kernels(dtype)


def half_kernels(dtype: torch.dtype) -> bool:
    """Whether oneDNN has ``dtype`` (bf16 / fp16) kernels for this CPU (its own test)."""
    name = "_is_mkldnn_bf16_supported" if dtype == torch.bfloat16 else "_is_mkldnn_fp16_supported"
    check = getattr(torch.ops.mkldnn, name, None)
    return bool(check()) if check is not None else True


def fast_half(dtype: torch.dtype) -> bool:
    """Whether ``dtype`` (bf16 / fp16) matrix products run natively on this CPU: oneDNN's
    kernels, and for bf16 an instruction set with bf16 arithmetic (AVX512-BF16 or AMX).
    On plain AVX-512 oneDNN has bf16 kernels but emulates the arithmetic: measured at a fifth
    of the float32 rate (35 against 167 GFLOP/s; MiniLM at 0.49x Sentence Transformers fp32)."""
    if not half_kernels(dtype):
        return False
    if dtype != torch.bfloat16:
        return True  # oneDNN's fp16 test already asks for AVX512-FP16 or AMX-FP16
    probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    probes = [p for p in probes if p is not None]
    return not probes or any(p() for p in probes)


def gelu_epilogue_pays() -> bool:
    """Whether to fuse exact GELU into the FFN's first GEMM on this CPU.

    Not on an AVX2-only CPU: there oneDNN's GELU epilogue made that GEMM 20-25% slower than the
    same GEMM followed by ``F.gelu`` at every row count tried (128-2,048 rows of MiniLM's
    384 x 1,536), and ``LLM.embed`` 8% slower end to end (README, "Benchmarks"). Kept on
    AVX-512 and AMX CPUs, where the fused model was the one measured.
    """
    return torch.backends.cpu.get_cpu_capability() != "AVX2"


class PackedLinear(torch.nn.Module):
    """``activation(x @ weight.T + bias)`` with the weight prepacked for oneDNN.

    Args:
        linear: the layer to replace (its weight is reordered once, at construction).
        batch_hint: typical number of rows per call (chooses the packed layout).
        activation: ``"none"`` or ``"gelu"`` (exact, erf-based) fused into the GEMM.
    """

    def __init__(self, linear: torch.nn.Linear, batch_hint: int, activation: str = "none") -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.activation = activation
        with torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), batch_hint)
        self.register_buffer("packed_weight", packed, persistent=False)
        bias = linear.bias.detach() if linear.bias is not None else None
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        algorithm = "none" if self.activation == "gelu" else ""
        return torch.ops.mkldnn._linear_pointwise(
            x.contiguous(), self.packed_weight, self.bias, self.activation, [], algorithm
        )

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, activation={self.activation}"


class ResidualLinearNorm(torch.nn.Module):
    """``LayerNorm(x @ weight.T + bias + residual)`` with the add fused into the GEMM.

    Replaces a BERT-style output block (``dense``, ``dropout``, ``LayerNorm``; inference
    only, so dropout is the identity) and keeps its call signature.

    Args:
        dense: the block's prepacked linear (no activation).
        norm: the block's LayerNorm.
    """

    def __init__(self, dense: PackedLinear, norm: torch.nn.LayerNorm) -> None:
        super().__init__()
        self.dense = dense
        self.LayerNorm = norm  # the block's own attribute name

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        summed = torch.ops.mkldnn._linear_pointwise.binary(
            hidden_states.contiguous(), input_tensor.contiguous(), self.dense.packed_weight,
            self.dense.bias, "add",
        )  # fmt: skip
        return self.LayerNorm(summed)


def _output_block(module: torch.nn.Module) -> bool:
    """A block whose parts are exactly a prepacked ``dense``, a ``dropout`` and a ``LayerNorm``."""
    parts = dict(module.named_children())
    return (
        set(parts) == {"dense", "dropout", "LayerNorm"}
        and isinstance(parts["dense"], PackedLinear)
        and parts["dense"].activation == "none"
        and isinstance(parts["LayerNorm"], torch.nn.LayerNorm)
        and isinstance(parts["dropout"], torch.nn.Dropout)
    )


def fuse_residuals(model: torch.nn.Module) -> int:
    """Swap the output blocks of ``model``'s layers for :class:`ResidualLinearNorm`; returns how many.

    Each candidate is run on random inputs before and after; a block whose forward is not
    ``LayerNorm(dense(x) + residual)`` (or an op this build lacks) keeps its module.
    """
    fused = 0
    for name, block in list(model.named_modules()):
        if not (_LAYER.search(name + ".") and _output_block(block)):
            continue
        new = ResidualLinearNorm(block.dense, block.LayerNorm)
        dense = block.dense
        x = torch.randn(2, 5, dense.in_features, dtype=dense.packed_weight.dtype)
        res = torch.randn(2, 5, dense.out_features, dtype=x.dtype)
        tol = 1e-4 if x.dtype == torch.float32 else 5e-2  # bf16: one rounding fewer when fused
        try:
            with torch.no_grad():
                ok = torch.allclose(new(x, res).float(), block(x, res).float(), rtol=tol, atol=tol)
        except (RuntimeError, TypeError) as e:  # a missing op, or a block with another signature
            logger.debug("Residual fusion unavailable for %s (%s)", name, e)
            ok = False
        if not ok:
            continue
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, new)
        fused += 1
    return fused


def _exact_gelu(module: object) -> bool:
    """Transformers' ``GELUActivation`` on the erf formula, or ``nn.GELU()``."""
    if isinstance(module, torch.nn.GELU):
        return module.approximate == "none"
    act = getattr(module, "act", None)
    return type(module).__name__ == "GELUActivation" and act is F.gelu


def _agrees(linear: torch.nn.Linear, packed: PackedLinear, activation: str) -> bool:
    x = torch.randn(7, linear.in_features, dtype=linear.weight.dtype)
    with torch.no_grad():
        ref = F.linear(x, linear.weight, linear.bias)
        ref = F.gelu(ref) if activation == "gelu" else ref
        got = packed(x)
    tol = 1e-4 if x.dtype == torch.float32 else 3e-2
    return bool(torch.allclose(got.float(), ref.float(), rtol=tol, atol=tol))


def prepack(model: torch.nn.Module, batch_hint: int) -> int:
    """Replace the linears inside ``model``'s transformer layers; returns how many.

    Then fuses the residual adds of BERT-style output blocks (:func:`fuse_residuals`).

    Leaves the model untouched (and returns 0) when the oneDNN ops are missing or disagree
    with ``F.linear`` on a random input.
    """
    linears = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear) and _LAYER.search(name + ".")
    ]
    if not linears or not available(linears[0][1].weight.dtype):
        return 0
    swaps: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
    for name, linear in linears:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        act_fn = getattr(parent, "intermediate_act_fn", None)
        fuse_gelu = attr == "dense" and _exact_gelu(act_fn) and gelu_epilogue_pays()
        activation = "gelu" if fuse_gelu else "none"
        try:
            packed = PackedLinear(linear, batch_hint, activation)
            ok = _agrees(linear, packed, activation)
        except RuntimeError as e:  # an op this build lacks for this shape or dtype
            logger.info("oneDNN prepacking unavailable (%s); keeping torch linears", e)
            return 0
        if not ok:
            logger.warning("oneDNN linear disagrees with F.linear on %s; keeping torch linears", name)
            return 0
        swaps.append((parent, attr, packed))
        if activation == "gelu":
            swaps.append((parent, "intermediate_act_fn", torch.nn.Identity()))
    for parent, attr, module in swaps:
        setattr(parent, attr, module)
    logger.debug("Fused the residual add into %d output blocks", fuse_residuals(model))
    return sum(isinstance(m, PackedLinear) for _, _, m in swaps)
