"""The FLOP count behind the GPU check's "share of the GEMM rate", against torch's own counter."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.gpu_shapes import flops_per_token


@pytest.mark.parametrize("arch", ["bert", "qwen2"])
def test_flops_per_token_matches_torch_flop_counter(arch):
    common = dict(
        vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96
    )
    if arch == "bert":
        cfg = transformers.BertConfig(**common)
        model = transformers.BertModel(cfg, add_pooling_layer=False)  # the engine pools itself
    else:
        cfg = transformers.Qwen2Config(num_key_value_heads=2, **common)
        model = transformers.Qwen2Model(cfg)
    cfg._attn_implementation = "eager"  # attention as matmuls the counter sees
    model.config._attn_implementation = "eager"
    length = 24
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(input_ids=torch.randint(5, 100, (1, length)))
    counted = counter.get_total_flops() / length
    assert flops_per_token(cfg, [length]) == pytest.approx(counted, rel=1e-6)
