import doctest
import importlib

import numpy as np
import pytest
import torch
from vllm_pool.retrievers import maxsim as maxsim_module_fn
from vllm_pool.retrievers import pad_token_vectors

# the package exports the function `maxsim`, which shadows the submodule attribute
ms = importlib.import_module("vllm_pool.retrievers.maxsim")
kernel = importlib.import_module("vllm_pool.maxsim_kernel")


def loop_maxsim(q, d, qm, dm):
    out = np.zeros((len(q), len(d)))
    for a in range(len(q)):
        for b in range(len(d)):
            total = 0.0
            for i in range(q.shape[1]):
                if not qm[a, i]:
                    continue
                sims = [float(np.dot(q[a, i], d[b, j])) for j in range(d.shape[1]) if dm[b, j]]
                total += max(sims) if sims else 0.0
            out[a, b] = total
    return out


def test_matches_python_loop_with_masks(rng):
    q = rng.standard_normal((3, 5, 8)).astype(np.float32)
    d = rng.standard_normal((4, 7, 8)).astype(np.float32)
    qm = rng.random((3, 5)) > 0.3
    dm = rng.random((4, 7)) > 0.3
    dm[2] = False  # a fully masked document scores 0
    got = maxsim_module_fn(q, d, qm, dm)
    assert isinstance(got, np.ndarray) and got.shape == (3, 4)
    np.testing.assert_allclose(got, loop_maxsim(q, d, qm, dm), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[:, 2], 0.0)


def test_fp16_inputs_accumulate_in_fp32(rng):
    q = rng.standard_normal((2, 32, 64)).astype(np.float16)
    d = rng.standard_normal((3, 50, 64)).astype(np.float16)
    ones_q, ones_d = np.ones((2, 32), bool), np.ones((3, 50), bool)
    expected = loop_maxsim(q.astype(np.float64), d.astype(np.float64), ones_q, ones_d)
    got = maxsim_module_fn(torch.from_numpy(q), torch.from_numpy(d))
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4)


def test_blocking_over_many_documents(rng, monkeypatch):
    monkeypatch.setattr(kernel, "BLOCK_ELEMENTS", 64)  # force many blocks
    q = rng.standard_normal((2, 3, 4)).astype(np.float32)
    d = rng.standard_normal((9, 5, 4)).astype(np.float32)
    ones = np.ones
    np.testing.assert_allclose(
        maxsim_module_fn(q, d), loop_maxsim(q, d, ones((2, 3)), ones((9, 5))), rtol=1e-5
    )


def test_bad_shapes():
    with pytest.raises(ValueError, match="dimension mismatch"):
        maxsim_module_fn(np.zeros((1, 2, 3)), np.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match=r"\[Q, Lq, D\]"):
        maxsim_module_fn(np.zeros((2, 3)), np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="query_mask"):
        maxsim_module_fn(np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), query_mask=np.ones((1, 3)))
    with pytest.raises(TypeError):
        maxsim_module_fn([[[1.0]]], np.zeros((1, 1, 1)))


def test_pad_token_vectors_and_maxsim_agree(rng):
    docs = [rng.standard_normal((n, 6)).astype(np.float32) for n in (3, 1, 5)]
    tokens, mask = pad_token_vectors(docs)
    assert tokens.shape == (3, 5, 6) and mask.sum(1).tolist() == [3, 1, 5]
    q = rng.standard_normal((1, 4, 6)).astype(np.float32)
    got = maxsim_module_fn(torch.from_numpy(q), tokens, doc_mask=mask).numpy()[0]
    for i, doc in enumerate(docs):
        assert got[i] == pytest.approx(float((q[0] @ doc.T).max(1).sum()), rel=1e-5)
    with pytest.raises(ValueError):
        pad_token_vectors([])
    with pytest.raises(ValueError, match=r"arrays\[1\]"):
        pad_token_vectors([np.zeros((2, 3)), np.zeros((2, 4))])


def test_module_doctests():
    result = doctest.testmod(ms, extraglobs={"np": np})
    assert result.attempted >= 3 and result.failed == 0
