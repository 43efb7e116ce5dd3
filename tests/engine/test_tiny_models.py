"""Parity with transformers on tiny random models the tests build (BERT, XLM-R, Qwen2)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_models import TEXTS


def _reference(folder, texts, pooling: str, normalize: bool, model_cls: str = "AutoModel"):
    """Embed each text alone (no padding) with transformers and pool by hand."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = getattr(transformers, model_cls).from_pretrained(folder, dtype=torch.float32).eval()
    outs = []
    for text in texts:
        enc = tok(text, return_tensors="pt", truncation=True)
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state[0]  # [len, hidden]
        vec = {"CLS": hidden[0], "MEAN": hidden.mean(0), "LAST": hidden[-1], "ALL": hidden}[pooling]
        outs.append(F.normalize(vec, dim=-1) if normalize else vec)
    return outs


def _ours(llm, texts, task="embed", **kw):
    kw.setdefault("truncate_prompt_tokens", -1)  # the reference cuts TEXTS[5] to the model's limit
    return [o.outputs.data for o in llm.encode(texts, pooling_task=task, use_tqdm=False, **kw)]


@pytest.mark.parametrize("pooling", ["CLS", "MEAN"])
def test_bert_cls_and_mean(tiny_bert, pooling):
    from vllm_pool import LLM

    llm = LLM(str(tiny_bert), pooler_config={"pooling_type": pooling})
    for ours, ref in zip(_ours(llm, TEXTS), _reference(tiny_bert, TEXTS, pooling, True)):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_bert_default_is_cls_normalized(tiny_bert):
    from vllm_pool import LLM

    llm = LLM(str(tiny_bert))
    assert llm.model_config.default_pooling_type() == "CLS"
    assert llm.get_supported_tasks() == ("embed", "token_embed")
    for ours, ref in zip(_ours(llm, TEXTS), _reference(tiny_bert, TEXTS, "CLS", True)):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_bert_token_embed(tiny_bert):
    from vllm_pool import LLM, PoolingParams

    llm = LLM(str(tiny_bert))
    ours = _ours(llm, TEXTS, "token_embed", pooling_params=PoolingParams(normalize=False))
    for o, ref in zip(ours, _reference(tiny_bert, TEXTS, "ALL", False)):
        torch.testing.assert_close(o, ref, rtol=1e-4, atol=1e-5)


def test_xlm_roberta_cls(tiny_xlmr):
    from vllm_pool import LLM

    llm = LLM(str(tiny_xlmr))
    assert llm.model_config.max_model_len == 128  # 130 positions minus RoBERTa's offset of 2
    for ours, ref in zip(_ours(llm, TEXTS), _reference(tiny_xlmr, TEXTS, "CLS", True)):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_decoder_last_pooling(tiny_qwen2):
    """A *ForCausalLM converts to embed with LAST pooling and normalization (spec table)."""
    from vllm_pool import LLM

    llm = LLM(str(tiny_qwen2), runner="pooling")
    assert llm.model_config.convert == "embed"
    assert llm.model_config.default_pooling_type() == "LAST"
    ours = _ours(llm, TEXTS)
    refs = _reference(tiny_qwen2, TEXTS, "LAST", True)
    for o, ref in zip(ours, refs):
        torch.testing.assert_close(o, ref, rtol=1e-4, atol=1e-5)
    # right padding must not leak into the last token of shorter prompts
    alone = _ours(llm, [TEXTS[4]])[0]
    torch.testing.assert_close(ours[4], alone, rtol=1e-5, atol=1e-6)


def test_decoder_mean_pooling_override(tiny_qwen2):
    from vllm_pool import LLM

    llm = LLM(str(tiny_qwen2), pooler_config={"pooling_type": "MEAN", "normalize": False})
    for ours, ref in zip(_ours(llm, TEXTS), _reference(tiny_qwen2, TEXTS, "MEAN", False)):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_bfloat16_close_to_fp32(tiny_bert):
    from vllm_pool import LLM

    fp32 = _ours(LLM(str(tiny_bert)), TEXTS)
    bf16 = _ours(LLM(str(tiny_bert), dtype="bfloat16"), TEXTS)
    for a, b in zip(fp32, bf16):
        assert b.dtype == torch.float32  # outputs are always returned in fp32
        assert float(F.cosine_similarity(a, b, dim=0)) >= 0.99


def test_compiled_model_matches_eager(tiny_bert):
    """``compile=True`` (torch.compile, inductor) gives the eager outputs, masks included."""
    from vllm_pool import LLM

    eager = _ours(LLM(str(tiny_bert), pooler_config={"pooling_type": "MEAN"}), TEXTS)
    llm = LLM(str(tiny_bert), pooler_config={"pooling_type": "MEAN"}, compile=True)
    assert llm.runner.compiled
    for a, b in zip(eager, _ours(llm, TEXTS)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
