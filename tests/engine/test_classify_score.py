"""classify, score (cross- and bi-encoder), token_classify on tiny models vs transformers / ST."""

from __future__ import annotations

import random

import numpy as np
import pytest
import tiny_models
import torch
from tiny_models import TEXTS

PAIRS_Q = ["what is the capital of france", "python code", "hello world"]
PAIRS_D = ["paris is the capital city of france", "a function and a class", "the sun and the moon"]


def _hf_logits(folder, texts, cls="AutoModelForSequenceClassification", pairs=None):
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = getattr(transformers, cls).from_pretrained(folder, dtype=torch.float32).eval()
    outs = []
    items = zip(texts, pairs) if pairs is not None else ((t, None) for t in texts)
    for a, b in items:
        enc = (
            tok(a, b, return_tensors="pt", truncation=True) if b is not None else tok(a, return_tensors="pt")
        )
        with torch.no_grad():
            outs.append(model(**enc).logits[0])
    return outs


@pytest.fixture(scope="module")
def bert3(tiny_dir):
    return tiny_models.bert(
        tiny_dir / "bert_cls3",
        cls="BertForSequenceClassification",
        num_labels=3,
        id2label={0: "neg", 1: "neutral", 2: "pos"},
        label2id={"neg": 0, "neutral": 1, "pos": 2},
    )


@pytest.fixture(scope="module")
def bert1(tiny_dir):
    return tiny_models.bert(tiny_dir / "bert_cls1", cls="BertForSequenceClassification", num_labels=1)


def test_classify_softmax_matches_transformers(bert3):
    from vllm_pool import LLM, PoolingParams

    llm = LLM(str(bert3))
    assert llm.get_supported_tasks() == ("classify", "token_classify")
    outs = llm.classify(TEXTS, use_tqdm=False)
    raw = llm.classify(TEXTS, PoolingParams(use_activation=False), use_tqdm=False)
    for o, r, ref in zip(outs, raw, _hf_logits(bert3, TEXTS)):
        assert o.outputs.num_classes == 3
        torch.testing.assert_close(torch.tensor(o.outputs.probs), ref.softmax(-1), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(torch.tensor(r.outputs.probs), ref, rtol=1e-4, atol=1e-5)
    assert llm.model_config.hf_config.id2label[2] == "pos"


def test_classify_shuffled_batch_invariance(bert3):
    from vllm_pool import LLM

    llm = LLM(str(bert3), max_num_batched_tokens=64)
    base = np.array([o.outputs.probs for o in llm.classify(TEXTS, use_tqdm=False)])
    order = list(range(len(TEXTS)))
    random.Random(1).shuffle(order)
    shuffled = np.array([o.outputs.probs for o in llm.classify([TEXTS[i] for i in order], use_tqdm=False)])
    np.testing.assert_allclose(shuffled, base[order], rtol=1e-5, atol=1e-6)
    alone = np.array([llm.classify(t, use_tqdm=False)[0].outputs.probs for t in TEXTS])
    np.testing.assert_allclose(alone, base, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "config, act",
    [
        ({"num_labels": 1}, torch.sigmoid),
        ({"num_labels": 3, "problem_type": "multi_label_classification"}, torch.sigmoid),
        ({"num_labels": 2, "problem_type": "regression"}, lambda x: x),
    ],
)
def test_activation_from_config(tiny_dir, config, act):
    from vllm_pool import LLM

    name = "bert_act_" + "_".join(f"{k}{v}" for k, v in config.items())
    folder = tiny_models.bert(tiny_dir / name, cls="BertForSequenceClassification", **config)
    outs = LLM(str(folder)).classify(TEXTS[:4], use_tqdm=False)
    for o, ref in zip(outs, _hf_logits(folder, TEXTS[:4])):
        torch.testing.assert_close(torch.tensor(o.outputs.probs), act(ref), rtol=1e-4, atol=1e-6)


def test_cross_encoder_score_with_token_type_ids(bert1):
    from sentence_transformers import CrossEncoder

    from vllm_pool import LLM

    llm = LLM(str(bert1))
    assert "score" in llm.get_supported_tasks()
    ours = [o.outputs.score for o in llm.score(PAIRS_Q, PAIRS_D, use_tqdm=False)]
    ref = CrossEncoder(str(bert1), device="cpu").predict(list(zip(PAIRS_Q, PAIRS_D)))
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)
    hf = torch.sigmoid(torch.stack(_hf_logits(bert1, PAIRS_Q, pairs=PAIRS_D))).reshape(-1).numpy()
    np.testing.assert_allclose(ours, hf, rtol=1e-4, atol=1e-6)


def test_cross_encoder_st_activation(tiny_dir, bert1):
    from sentence_transformers import CrossEncoder

    from vllm_pool import LLM

    folder = tiny_dir / "ce_tanh"
    CrossEncoder(str(bert1), device="cpu", activation_fn=torch.nn.Tanh()).save(str(folder))
    ours = [o.outputs.score for o in LLM(str(folder)).score(PAIRS_Q[0], PAIRS_D, use_tqdm=False)]
    ref = CrossEncoder(str(folder), device="cpu").predict([(PAIRS_Q[0], d) for d in PAIRS_D])
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)
    assert min(ours) < 0 or max(ours) < 1  # tanh range, not a sigmoid


def test_xlm_roberta_cross_encoder(tiny_dir):
    from sentence_transformers import CrossEncoder

    from vllm_pool import LLM

    folder = tiny_models.xlm_roberta(
        tiny_dir / "xlmr_ce", cls="XLMRobertaForSequenceClassification", num_labels=1
    )
    ours = [o.outputs.score for o in LLM(str(folder)).score(PAIRS_Q, PAIRS_D, use_tqdm=False)]
    ref = CrossEncoder(str(folder), device="cpu").predict(list(zip(PAIRS_Q, PAIRS_D)))
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)


def test_score_shapes(bert1):
    from vllm_pool import LLM

    llm = LLM(str(bert1))
    one_one = llm.score(PAIRS_Q[0], PAIRS_D[0], use_tqdm=False)
    one_n = llm.score(PAIRS_Q[0], PAIRS_D, use_tqdm=False)
    n_n = llm.score(PAIRS_Q, PAIRS_D, use_tqdm=False)
    assert (len(one_one), len(one_n), len(n_n)) == (1, 3, 3)
    assert one_n[0].outputs.score == pytest.approx(one_one[0].outputs.score, abs=1e-6)
    assert n_n[1].outputs.score == pytest.approx(
        llm.score(PAIRS_Q[1], PAIRS_D[1], use_tqdm=False)[0].outputs.score, abs=1e-6
    )
    for a, b in ((PAIRS_Q, PAIRS_D[:2]), (PAIRS_Q[:2], PAIRS_D[0])):
        with pytest.raises(ValueError, match=r"^Input lengths must be either 1:1, 1:N or N:N$"):
            llm.score(a, b, use_tqdm=False)
    # vLLM's messages for an empty side
    with pytest.raises(ValueError, match=r"^At least one text element must be given$"):
        llm.score([], [], use_tqdm=False)
    with pytest.raises(ValueError, match=r"^At least one text_pair element must be given$"):
        llm.score("q", [], use_tqdm=False)
    with pytest.raises(TypeError, match=r"data_2\[1\] must be a string"):
        llm.score("q", ["a", 3], use_tqdm=False)
    assert len(llm.score("q", "d", use_tqdm=False)) == 1  # still usable


def test_bi_encoder_score_falls_back_to_cosine(default_llm, st_model):
    queries = ["How do I parse JSON?", "What is the capital of France?"]
    docs = ["json.loads parses a JSON document", "Paris is the capital of France."]
    ours = [o.outputs.score for o in default_llm.score(queries, docs, use_tqdm=False)]
    a = st_model.encode(queries, convert_to_tensor=True)
    b = st_model.encode(docs, convert_to_tensor=True)
    ref = torch.nn.functional.cosine_similarity(a, b).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_multi_label_model_has_no_score(bert3):
    from vllm_pool import LLM, UnsupportedTaskError

    llm = LLM(str(bert3))
    with pytest.raises(
        UnsupportedTaskError,
        match=r"does not support the 'score' task; supported tasks: \['classify', 'token_classify'\]",
    ):
        llm.score("a", "b", use_tqdm=False)


def test_token_classification(tiny_dir):
    from vllm_pool import LLM

    folder = tiny_models.bert(tiny_dir / "bert_tok", cls="BertForTokenClassification", num_labels=4)
    llm = LLM(str(folder))
    assert llm.get_supported_tasks() == ("token_classify",)
    outs = llm.encode(TEXTS, pooling_task="token_classify", use_tqdm=False)
    for o, ref in zip(outs, _hf_logits(folder, TEXTS, cls="AutoModelForTokenClassification")):
        assert o.outputs.data.shape == ref.shape
        torch.testing.assert_close(o.outputs.data, ref.softmax(-1), rtol=1e-4, atol=1e-6)


def test_params_for_the_wrong_task(bert3, default_llm):
    from vllm_pool import LLM, PoolingParams

    with pytest.raises(
        ValueError,
        match=r"Task classify only supports \['use_activation'\] parameters, "
        r"does not support \['normalize'\]",
    ):
        LLM(str(bert3)).classify("x", PoolingParams(normalize=True), use_tqdm=False)
    with pytest.raises(
        ValueError, match=r"Task embed only supports \['dimensions', 'normalize'\] parameters"
    ):
        default_llm.embed("x", PoolingParams(use_activation=False), use_tqdm=False)


def test_convert_embed_on_a_classifier(bert3):
    """``convert="embed"`` uses the classifier's encoder for embeddings (CLS, normalized)."""
    import transformers

    from vllm_pool import LLM

    llm = LLM(str(bert3), convert="embed")
    assert llm.get_supported_tasks() == ("embed", "token_embed")
    (out,) = llm.embed(TEXTS[1], use_tqdm=False)
    tok = transformers.AutoTokenizer.from_pretrained(bert3)
    base = transformers.AutoModel.from_pretrained(bert3).eval()
    with torch.no_grad():
        ref = base(**tok(TEXTS[1], return_tensors="pt")).last_hidden_state[0, 0]
    torch.testing.assert_close(
        torch.tensor(out.outputs.embedding), torch.nn.functional.normalize(ref, dim=0), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize(
    "archs, convert",
    [
        (["BertModel"], "embed"),
        (["XLMRobertaForTextEncoding"], "embed"),
        (["BgeM3EmbeddingModel"], "embed"),
        (["InternLM2ForRewardModel"], "embed"),
        (["Qwen2ForRewardModeling"], "embed"),
        (["Qwen2ForCausalLM"], "embed"),
        (["BertForSequenceClassification"], "classify"),
        (["BertForTokenClassification"], "classify"),
        (["JinaVLForRanking", "GteNewClassificationModel"], "classify"),
        (["ModernBertForAudioFrameClassification"], "classify"),
    ],
)
def test_conversion_table(archs, convert):
    from vllm_pool.engine.config import resolve_convert

    assert resolve_convert(archs, "auto") == convert
    assert resolve_convert(archs, "classify") == "classify"


def test_cross_encoder_activation_outside_torch_nn(tiny_dir, bert1):
    import json
    import shutil

    from vllm_pool import LLM

    folder = tiny_dir / "ce_custom_act"
    shutil.copytree(bert1, folder, dirs_exist_ok=True)
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"activation_fn": "math.floor"}))
    (folder / "modules.json").write_text(
        json.dumps([{"idx": 0, "name": "0", "path": "", "type": "x.Transformer"}])
    )
    with pytest.raises(ValueError, match="not a torch.nn module .*trust_remote_code"):
        LLM(str(folder))
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"activation_fn": "torch.nn.modules.activation.Softsign"})
    )
    (out,) = LLM(str(folder)).score("a", "b", use_tqdm=False)
    assert -1 < out.outputs.score < 1


def test_each_task_has_its_own_activation(tiny_dir, bert1):
    """vLLM's DispatchPooler.for_seq_cls: classify from ``problem_type``, score from the
    CrossEncoder's ``activation_fn`` (else sigmoid for one label), reward / token_classify
    sigmoid for one label. A 1-label model saved by the HF Trainer says "regression"."""
    from sentence_transformers import CrossEncoder

    from vllm_pool import LLM, PoolingParams

    folder = tiny_models.bert(
        tiny_dir / "bert_ce_regression",
        cls="BertForSequenceClassification",
        num_labels=1,
        problem_type="regression",
    )
    llm = LLM(str(folder))
    scores = [o.outputs.score for o in llm.score(PAIRS_Q[0], PAIRS_D, use_tqdm=False)]
    ref = CrossEncoder(str(folder), device="cpu").predict([(PAIRS_Q[0], d) for d in PAIRS_D])
    np.testing.assert_allclose(scores, ref, rtol=1e-4, atol=1e-6)  # sigmoid, not the raw logit
    probs = [o.outputs.probs[0] for o in llm.classify(TEXTS[:3], use_tqdm=False)]
    np.testing.assert_allclose(probs, [x.item() for x in _hf_logits(folder, TEXTS[:3])], rtol=1e-4, atol=1e-6)
    (reward,) = llm.reward(TEXTS[0], use_tqdm=False)
    (raw,) = llm.reward(TEXTS[0], PoolingParams(use_activation=False), use_tqdm=False)
    torch.testing.assert_close(reward.outputs.data, torch.sigmoid(raw.outputs.data))

    identity = tiny_dir / "ce_identity"
    CrossEncoder(str(bert1), device="cpu", activation_fn=torch.nn.Identity()).save(str(identity))
    llm = LLM(str(identity))
    scores = [o.outputs.score for o in llm.score(PAIRS_Q[0], PAIRS_D, use_tqdm=False)]
    ref = CrossEncoder(str(identity), device="cpu").predict([(PAIRS_Q[0], d) for d in PAIRS_D])
    np.testing.assert_allclose(scores, ref, rtol=1e-4, atol=1e-6)  # the folder's Identity
    probs = [o.outputs.probs[0] for o in llm.classify(TEXTS[:3], use_tqdm=False)]
    hf = torch.sigmoid(torch.stack(_hf_logits(identity, TEXTS[:3]))).reshape(-1).numpy()
    np.testing.assert_allclose(probs, hf, rtol=1e-4, atol=1e-6)
