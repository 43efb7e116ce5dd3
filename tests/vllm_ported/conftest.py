"""Tiny stand-ins for the hub models vLLM's pooling tests load, built once per session.

Each fixture names the hub model it replaces. The ported tests keep vLLM's calls where our
API allows; their docstrings say what was adapted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tiny_models
import torch
from ported_server import make_client


def _once(folder: Path, build: Any) -> Path:
    if not (folder / "config.json").exists() and not (folder / "modules.json").exists():
        build(folder)
    return folder


@pytest.fixture(scope="session")
def e5_small(tiny_dir) -> Path:
    """intfloat/multilingual-e5-small: XLM-RoBERTa, Sentence Transformers mean pooling, normalized."""

    def build(folder: Path) -> None:
        base = tiny_models.xlm_roberta(tiny_dir / "ported_e5_base")
        tiny_models.sentence_transformer(folder, base, pooling="mean", dense_out=None, max_seq_length=128)

    return _once(tiny_dir / "ported_e5", build)


@pytest.fixture(scope="session")
def arctic_matryoshka(tiny_dir) -> Path:
    """Snowflake/snowflake-arctic-embed-m-v1.5 with ``matryoshka_dimensions=[16]`` (CLS, normalized)."""

    def build(folder: Path) -> None:
        base = tiny_models.bert(tiny_dir / "ported_arctic_base")
        tiny_models.sentence_transformer(folder, base, pooling="cls", dense_out=None, max_seq_length=128)

    return _once(tiny_dir / "ported_arctic", build)


@pytest.fixture(scope="session")
def apeach(tiny_dir) -> Path:
    """jason9693/Qwen2.5-1.5B-apeach: a Qwen2 sequence classifier, labels Default / Spoiled."""

    def build(folder: Path) -> None:
        tiny_models.qwen2(
            folder, cls="Qwen2ForSequenceClassification", num_labels=2,
            id2label={0: "Default", 1: "Spoiled"}, label2id={"Default": 0, "Spoiled": 1},
        )  # fmt: skip

    return _once(tiny_dir / "ported_apeach", build)


@pytest.fixture(scope="session")
def bge_reranker(tiny_dir) -> Path:
    """BAAI/bge-reranker-v2-m3: an XLM-RoBERTa cross-encoder with one label."""
    return _once(
        tiny_dir / "ported_reranker",
        lambda f: tiny_models.xlm_roberta(f, cls="XLMRobertaForSequenceClassification", num_labels=1),
    )


@pytest.fixture(scope="session")
def bge_m3(tiny_dir) -> Path:
    """BAAI/bge-m3: XLM-RoBERTa plus ``sparse_linear.pt`` and ``colbert_linear.pt``."""

    def build(folder: Path) -> None:
        import transformers

        tiny_models.xlm_roberta(folder)
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        tok.cls_token, tok.sep_token = "<s>", "</s>"  # as BGE-M3's tokenizer
        tok.save_pretrained(folder)
        torch.manual_seed(5)
        sparse = torch.nn.Linear(32, 1)
        with torch.no_grad():
            sparse.bias.fill_(0.5)  # most tokens get a positive weight, as in the real model
        torch.save(sparse.state_dict(), folder / "sparse_linear.pt")
        torch.save(torch.nn.Linear(32, 32).state_dict(), folder / "colbert_linear.pt")

    return _once(tiny_dir / "ported_bge_m3", build)


@pytest.fixture()
def client_for():
    """``client_for(app)``: an in-process client of ``app``."""
    return make_client


@pytest.fixture()
async def server(request, llm, client_for):
    """The test module's ``llm`` fixture served in process, under the module's ``MODEL_NAME``
    when it has one (vLLM's tests start a ``RemoteOpenAIServer`` on the model instead)."""
    from vllm_pool.engine.server import ServerConfig, build_app

    name = getattr(request.module, "MODEL_NAME", None)
    config = ServerConfig(served_model_names=[name]) if name else None
    async with client_for(build_app(llm, config)) as client:
        yield client
