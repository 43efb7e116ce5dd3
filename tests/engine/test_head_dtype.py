"""Pooling heads run in fp32 on fp32 inputs whatever the backbone's dtype, as vLLM's pooling
heads do (``head_dtype``): a bf16 model's embeddings are unit vectors to fp32 precision and its
classifier logits are not rounded to bf16."""

from __future__ import annotations

import tiny_models
import torch
import transformers
from sentence_transformers import SentenceTransformer

from vllm_pool import LLM, PoolingParams

RAW = PoolingParams(normalize=False)
LOGITS = PoolingParams(use_activation=False)


def test_dense_projection_and_normalize_run_in_fp32(tmp_path):
    base = tiny_models.bert(tmp_path / "bert")
    st = tiny_models.sentence_transformer(tmp_path / "st", base, pooling="cls", dense_out=16)
    texts = tiny_models.TEXTS
    out = LLM(str(st), dtype="bfloat16").embed(texts, use_tqdm=False)
    got = torch.tensor([o.outputs.embedding for o in out])
    # the same bf16 backbone without the head: its CLS rows, then ST's own Dense (fp32) and a norm
    bare = LLM(str(base), dtype="bfloat16").encode(texts, pooling_task="token_embed", pooling_params=RAW)
    cls = torch.stack([torch.as_tensor(o.outputs.data)[0] for o in bare])
    dense = SentenceTransformer(str(st), device="cpu")[2]
    with torch.no_grad():
        want = torch.nn.functional.normalize(dense({"sentence_embedding": cls})["sentence_embedding"], dim=-1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert (got.norm(dim=-1) - 1).abs().max() < 1e-6


def _bert_head(model, x):
    return model.classifier(model.bert.pooler(x.unsqueeze(1)))


def _roberta_head(model, x):
    return model.classifier(x.unsqueeze(1))


def _decoder_head(model, x):
    return model.score(x)


def test_classifier_heads_run_in_fp32(tmp_path):
    cases = [
        (tiny_models.bert, "BertForSequenceClassification", _bert_head),
        (tiny_models.xlm_roberta, "XLMRobertaForSequenceClassification", _roberta_head),
        (tiny_models.qwen2, "Qwen2ForSequenceClassification", _decoder_head),
    ]
    for build, cls, head_of in cases:
        folder = build(tmp_path / cls, cls=cls, num_labels=3)
        llm = LLM(str(folder), dtype="bfloat16")
        head = llm.poolers.get("classify").head
        inputs = []
        classifier = head.classifier
        head.classifier = lambda x, f=classifier, seen=inputs: (seen.append(x), f(x))[1]
        # one text per call: the head's input rows are in the outputs' order
        got = torch.tensor(
            [llm.classify(t, LOGITS, use_tqdm=False)[0].outputs.probs for t in tiny_models.TEXTS[:5]]
        )
        pooled = torch.cat(inputs)
        assert pooled.dtype == torch.float32, cls
        reference = transformers.AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
        with torch.no_grad():
            want = head_of(reference, pooled)  # the checkpoint's head in fp32 on the same pooled states
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7, msg=lambda m, c=cls: f"{c}: {m}")
