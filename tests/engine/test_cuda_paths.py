"""CUDA-only code paths, exercised on the CPU with stand-ins that follow torch's rules:
side-stream tensors recorded on the compute stream, the output copy's event on the engine's
device, a decoder's masked prompts on the flash path, a sliding window, and the kept device
copy of a multi-vector store."""

from __future__ import annotations

import numpy as np
import pytest
import tiny_models
import torch
import torch.nn.functional as F
from vllm_pool.engine import packing
from vllm_pool.engine.types import Batch

from vllm_pool import LLM


class FakeStream:
    def __init__(self, device=None):
        self.device = device

    def wait_event(self, event):
        pass


def test_every_tensor_copied_on_the_side_stream_is_recorded_on_the_compute_stream(tiny_bert, monkeypatch):
    """The packed extras (key index, key bounds) are read by the attention kernels: their
    memory must not go back to the copy stream's pool before the batch has run."""
    llm = LLM(str(tiny_bert), packed=True)
    runner = llm.runner
    copied, recorded, seen = {}, set(), {}
    to_device = runner._to_device

    def side_stream_copy(host):
        dev, _ = to_device(host)
        copied.update({id(v): k for k, v in dev.items()})
        return dev, object()  # a "ready" event, as on CUDA

    call = runner._call_model

    def spy(**inputs):
        seen.update({k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)})
        return call(**inputs)

    monkeypatch.setattr(runner, "_to_device", side_stream_copy)
    monkeypatch.setattr(runner, "_call_model", spy)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: FakeStream(device))
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, stream: recorded.add(id(self)))
    masked = {"prompt_token_ids": [2, 40, 41, 3, 4, 4], "attention_mask": [1, 1, 1, 1, 0, 0]}
    runner.forward(Batch(llm.make_requests([masked, {"prompt_token_ids": [2, 50, 3]}], "token_embed")))
    from_copy = {k for k, v in seen.items() if id(v) in copied}
    assert {"cu_seq_lens_k", "packed_key_index"} <= from_copy
    assert {k for k in from_copy if id(seen[k]) not in recorded} == set()


def test_the_output_copy_is_awaited_on_the_engine_device(monkeypatch):
    """``torch.cuda.Event.record()`` without a stream records on the current device's stream
    (cuda:0): an engine on cuda:1 would read its pinned outputs before their copy ended."""
    from types import SimpleNamespace

    from vllm_pool.engine import executor

    recorded_on = []

    class FakeEvent:
        def record(self, stream=None):
            stream = stream if stream is not None else torch.cuda.current_stream()  # torch's rule
            recorded_on.append(stream.device)

    def current_stream(device=None):
        return FakeStream(torch.device(device) if device is not None else torch.device("cuda", 0))

    monkeypatch.setattr(torch.cuda, "current_stream", current_stream)
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(executor, "gather_to_host", lambda outputs, pinned: {})
    engine = executor.ModelExecutor(SimpleNamespace(device=torch.device("cuda", 1)), poolers=None)
    engine.to_host({"embed": []})
    assert recorded_on == [torch.device("cuda", 1)]


def _varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
    """A flash varlen kernel with torch's signature, computed segment by segment with SDPA."""
    causal, out = tuple(window_size) == (-1, 0), []
    for i in range(len(cu_q) - 1):
        qs, ks, vs = (x[a:b].transpose(0, 1) for x, a, b in ((q, cu_q[i], cu_q[i + 1]),
                      (k, cu_k[i], cu_k[i + 1]), (v, cu_k[i], cu_k[i + 1])))  # fmt: skip
        o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal, scale=scale, enable_gqa=enable_gqa)
        out.append(o.transpose(0, 1))
    return torch.cat(out)


def test_a_decoders_masked_prompts_run_where_the_flash_kernel_is_used(tiny_qwen2, monkeypatch):
    llm = LLM(str(tiny_qwen2), packed=True)
    assert llm.runner.packed
    prompts = [{"prompt_token_ids": [5, 40, 41, 42, 7, 7], "attention_mask": [1, 1, 1, 1, 0, 0]}, [5, 9, 10]]
    ref = llm.encode(prompts, pooling_task="token_embed", use_tqdm=False)
    monkeypatch.setattr(packing, "flash_kernel", lambda q: _varlen)  # CUDA fp16 / bf16
    got = llm.encode(prompts, pooling_task="token_embed", use_tqdm=False)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.outputs.data, b.outputs.data, rtol=1e-4, atol=1e-5)


def test_a_sliding_window_shorter_than_the_prompts_keeps_batches_padded(tiny_dir):
    """Packed attention attends to whole prompts; transformers' padded path keeps the window."""
    folder = tiny_models.qwen2(
        tiny_dir / "qwen2_window", use_sliding_window=True, sliding_window=4, max_window_layers=0
    )
    llm = LLM(str(folder), packed=True)
    assert not llm.runner.packed
    texts = ["one two three four five six seven eight nine ten", "a b"]
    ref = _hf_last_hidden(folder, texts)
    for out, want in zip(llm.encode(texts, pooling_task="token_embed", use_tqdm=False), ref):
        torch.testing.assert_close(out.outputs.data, F.normalize(want, dim=-1), rtol=1e-4, atol=1e-5)
    assert packing.sliding_window(llm.runner.model.config) == 4


def _hf_last_hidden(folder, texts):
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return [model(**tok(t, return_tensors="pt")).last_hidden_state[0] for t in texts]


def test_the_kept_device_copy_of_a_store_is_reused(monkeypatch):
    """``torch.device("cuda")`` (what a GPU search asks for) never equals a tensor's
    ``cuda:0``; the copy must still be found, not made and uploaded again on every search.
    Here ``cpu:0`` plays ``cuda``: a tensor made on it reports plain ``cpu``."""
    from vllm_pool.retrievers.token_store import TokenStore

    store = TokenStore(8)
    rng = np.random.default_rng(0)
    store.add([0, 1, 2], [rng.standard_normal((5, 8)).astype(np.float32) for _ in range(3)])
    decoded = []
    decode = store.decode_range
    monkeypatch.setattr(store, "decode_range", lambda a, b: (decoded.append(b - a), decode(a, b))[1])
    first = store.device_rows(torch.device("cpu", 0))
    again = store.device_rows(torch.device("cpu", 0))
    assert again.data_ptr() == first.data_ptr() and sum(decoded) == 15  # decoded once
    np.testing.assert_allclose(first[:15].numpy(), store.decode_range(0, 15), atol=1e-6)


@pytest.mark.parametrize("types", [None, ["full_attention", "full_attention"]])
def test_sliding_window_read_from_the_config(types):
    from types import SimpleNamespace

    on = SimpleNamespace(sliding_window=4096, use_sliding_window=True, layer_types=types)
    assert packing.sliding_window(on) == (None if types else 4096)
    assert packing.sliding_window(SimpleNamespace(sliding_window=4096, use_sliding_window=False)) is None
    assert packing.sliding_window(SimpleNamespace(sliding_window=None)) is None
