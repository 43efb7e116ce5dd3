"""Fixtures of the integration tests: the shipped corpus (a slice of it) and its queries.

The engine itself needs no fixture: ``vllm_pool.integrations`` keeps one loaded engine per
configuration for the whole process, so every test here shares one all-MiniLM-L6-v2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CORPUS_DIR = Path(__file__).resolve().parents[2] / "demo" / "corpus"
MODULES = ("json", "subprocess", "hashlib", "csv", "tempfile", "base64", "uuid", "gzip", "re", "heapq")


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="session")
def passages() -> list[dict]:
    """Passages of a few modules of the shipped Python-docs corpus (about 90)."""
    path = CORPUS_DIR / "python_docs.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return [p for p in _jsonl(path) if p["module"] in MODULES]


@pytest.fixture(scope="session")
def queries(passages: list[dict]) -> list[dict]:
    """The shipped queries whose module is in :func:`passages`."""
    path = CORPUS_DIR / "queries.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return [q for q in _jsonl(path) if q["module"] in MODULES]
