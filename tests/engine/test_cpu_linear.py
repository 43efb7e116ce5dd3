"""Prepacked oneDNN linears (the CPU default): what is swapped, what is kept, and the fallback.

Every parity test of the engine (against transformers and Sentence Transformers) already
runs through these layers on the CPU; these tests pin down the swap itself.
"""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import AutoModel
from vllm_pool.engine import cpu_linear
from vllm_pool.engine.cpu_linear import PackedLinear, ResidualLinearNorm

from vllm_pool import LLM

pytestmark = pytest.mark.skipif(not cpu_linear.available(torch.float32), reason="torch built without oneDNN")


def _count(model: torch.nn.Module, cls: type) -> int:
    return sum(isinstance(m, cls) for m in model.modules())


@pytest.mark.parametrize("fuse", [True, False])
def test_engine_prepacks_the_layer_linears_and_fuses_gelu_where_it_pays(tiny_bert, monkeypatch, fuse):
    monkeypatch.setattr(cpu_linear, "gelu_epilogue_pays", lambda: fuse)
    engine_model = LLM(str(tiny_bert)).runner.model
    ref = AutoModel.from_pretrained(tiny_bert).eval()
    packed = AutoModel.from_pretrained(tiny_bert).eval()
    cpu_linear.prepack(packed, batch_hint=64)
    for model in (engine_model, packed):
        layers = model.config.num_hidden_layers
        assert _count(model, PackedLinear) == 6 * layers  # q, k, v, attention out, FFN in, FFN out
        for layer in model.encoder.layer:
            assert layer.intermediate.dense.activation == ("gelu" if fuse else "none")
            act = layer.intermediate.intermediate_act_fn
            assert isinstance(act, torch.nn.Identity) if fuse else type(act).__name__ == "GELUActivation"
            assert layer.output.dense.activation == "none"
        assert isinstance(model.pooler.dense, torch.nn.Linear)  # outside the layers: kept
    ids = torch.randint(5, 100, (2, 11))
    with torch.inference_mode():
        want = ref(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        got = packed(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_gelu_fusion_follows_the_cpu(monkeypatch):
    for capability, pays in (("AVX2", False), ("AVX512", True), ("DEFAULT", True)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert cpu_linear.gelu_epilogue_pays() is pays


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prepacked_model_matches_transformers(tiny_bert, dtype):
    ref = AutoModel.from_pretrained(tiny_bert, dtype=dtype).eval()
    packed = AutoModel.from_pretrained(tiny_bert, dtype=dtype).eval()
    # a CPU without oneDNN's bf16 kernels (AVX2 only) keeps torch's linears
    assert (cpu_linear.prepack(packed, batch_hint=64) > 0) == cpu_linear.available(dtype)
    ids = torch.randint(5, 100, (3, 17))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    with torch.inference_mode():
        a = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        b = packed(input_ids=ids, attention_mask=mask).last_hidden_state
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(b.float(), a.float(), rtol=tol, atol=tol)


def test_decoder_mlp_is_packed_without_gelu_fusion(tiny_qwen2):
    model = LLM(str(tiny_qwen2)).runner.model
    mlp = model.layers[0].mlp if hasattr(model, "layers") else model.model.layers[0].mlp
    assert isinstance(mlp.gate_proj, PackedLinear) and mlp.gate_proj.activation == "none"
    assert isinstance(mlp.down_proj, PackedLinear)


def test_disagreeing_op_leaves_the_model_alone(tiny_bert, monkeypatch, caplog):
    model = AutoModel.from_pretrained(tiny_bert).eval()
    before = _count(model, torch.nn.Linear)
    monkeypatch.setattr(cpu_linear, "_agrees", lambda *a: False)
    with caplog.at_level(logging.WARNING, logger="vllm_pool.engine.cpu_linear"):
        assert cpu_linear.prepack(model, batch_hint=64) == 0
    assert "disagrees" in caplog.text
    assert _count(model, PackedLinear) == 0 and _count(model, torch.nn.Linear) == before


def test_missing_ops_leave_the_model_alone(tiny_bert, monkeypatch):
    model = AutoModel.from_pretrained(tiny_bert).eval()
    monkeypatch.setattr(cpu_linear, "available", lambda dtype: False)
    assert cpu_linear.prepack(model, batch_hint=64) == 0
    assert _count(model, PackedLinear) == 0


def test_cpu_without_bf16_kernels_is_not_asked_to_prepack(tiny_bert, monkeypatch):
    """oneDNN refuses to reorder a bf16 weight on an AVX2-only CPU: such a CPU is not tried."""
    monkeypatch.setattr(cpu_linear, "half_kernels", lambda dtype: dtype != torch.bfloat16)
    assert not cpu_linear.available(torch.bfloat16) and cpu_linear.available(torch.float32)

    def refuse(*args, **kwargs):
        raise AssertionError("PackedLinear built for bf16 on a CPU without bf16 kernels")

    monkeypatch.setattr(cpu_linear, "PackedLinear", refuse)
    model = AutoModel.from_pretrained(tiny_bert, dtype=torch.bfloat16).eval()
    assert cpu_linear.prepack(model, batch_hint=64) == 0
    assert _count(model, torch.nn.Linear) > 0


def test_compiled_engine_is_not_prepacked(tiny_bert):
    """torch.compile's freezing prepacks by itself; the eager swap stays out of its way."""
    runner = LLM(str(tiny_bert), compile=True).runner
    assert _count(runner.model, PackedLinear) == 0


def test_output_blocks_fuse_the_residual_add(tiny_bert):
    model = LLM(str(tiny_bert)).runner.model
    for layer in model.encoder.layer:
        for block in (layer.attention.output, layer.output):
            assert isinstance(block, ResidualLinearNorm)
            assert isinstance(block.dense, PackedLinear) and block.dense.activation == "none"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_block_matches_the_block_it_replaces(tiny_bert, dtype):
    model = AutoModel.from_pretrained(tiny_bert, dtype=dtype).eval()
    block = model.encoder.layer[0].output
    x = torch.randn(2, 7, block.dense.in_features, dtype=dtype)
    res = torch.randn(2, 7, block.dense.out_features, dtype=dtype)
    with torch.inference_mode():
        want = block(x, res).float()
        swapped = cpu_linear.prepack(model, batch_hint=64) > 0
        assert swapped == cpu_linear.available(dtype)  # bf16: not on an AVX2-only CPU
        fused = model.encoder.layer[0].output
        assert isinstance(fused, ResidualLinearNorm) == swapped
        got = fused(x, res).float()
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_block_with_another_forward_keeps_its_module(tiny_bert):
    """Same parts, different formula (no residual): the probe refuses the swap."""
    model = AutoModel.from_pretrained(tiny_bert).eval()
    block = model.encoder.layer[0].output

    class NoResidual(type(block)):
        def forward(self, hidden_states, input_tensor):
            return self.LayerNorm(self.dense(hidden_states))

    block.__class__ = NoResidual
    cpu_linear.prepack(model, batch_hint=64)
    assert isinstance(model.encoder.layer[0].output, NoResidual)
    assert isinstance(model.encoder.layer[1].output, ResidualLinearNorm)


@pytest.mark.parametrize(
    "onednn, avx512_bf16, amx, fast",
    [
        (True, False, False, False),  # plain AVX-512: oneDNN emulates bf16 arithmetic
        (True, True, False, True),  # AVX512-BF16
        (True, False, True, True),  # AMX
        (False, True, True, False),  # no oneDNN bf16 kernels at all (AVX2)
    ],
)
def test_fast_bf16_needs_native_bf16_arithmetic(monkeypatch, onednn, avx512_bf16, amx, fast):
    monkeypatch.setattr(cpu_linear, "half_kernels", lambda dtype: onednn)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert cpu_linear.fast_half(torch.bfloat16) is fast
    assert cpu_linear.fast_half(torch.float16) is onednn  # fp16: oneDNN's own test decides
