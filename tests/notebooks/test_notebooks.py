"""Execute each RAG notebook top to bottom (offline, default model) and check its outputs.

The kernel is this interpreter (``sys.executable``), through a kernel spec written to a
temporary folder, so the notebooks see the same environment as the tests whatever the
machine's ``python3`` kernel points at.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
TIMEOUT_S = 600  # per cell; each notebook takes well under two minutes on 2 CPU cores


@pytest.fixture(scope="module")
def kernel_manager_factory(tmp_path_factory):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    kernels = tmp_path_factory.mktemp("kernels")
    spec_dir = kernels / "vllm-pool-tests"
    spec_dir.mkdir()
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "vllm-pool tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")

    def make() -> KernelManager:
        ksm = KernelSpecManager(kernel_dirs=[str(kernels)])
        return KernelManager(kernel_name="vllm-pool-tests", kernel_spec_manager=ksm)

    return make


def run_notebook(path: Path, km) -> str:
    """Execute ``path`` in its folder; return the text of all its outputs."""
    nb = nbformat.read(path, as_version=4)
    env = {
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = nbclient.NotebookClient(
            nb, km=km, timeout=TIMEOUT_S, resources={"metadata": {"path": str(path.parent)}}
        )
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                texts.append(out.get("text", ""))
            elif "data" in out:
                texts.append(out["data"].get("text/plain", ""))
                if "image/png" in out["data"]:
                    texts.append("<image/png>")
    return "\n".join(texts)


def test_langchain_rag(kernel_manager_factory) -> None:
    pytest.importorskip("langchain_classic", reason="the notebook uses ContextualCompressionRetriever")
    pytest.importorskip("langchain_text_splitters")
    text = run_notebook(NOTEBOOKS / "01_langchain_rag.ipynb", kernel_manager_factory())
    assert "subprocess" in text
    assert "module hit rate@3" in text
    assert "OFFLINE STAND-IN" in text or "LLM step: OpenAI" in text
    assert "Context:" in text and "Question:" in text


def test_llamaindex_rag(kernel_manager_factory) -> None:
    text = run_notebook(NOTEBOOKS / "02_llamaindex_rag.ipynb", kernel_manager_factory())
    assert "hashlib" in text
    assert "module hit rate@3" in text


def test_colbert_vs_dense(kernel_manager_factory) -> None:
    pytest.importorskip("matplotlib")
    text = run_notebook(NOTEBOOKS / "03_colbert_vs_dense.ipynb", kernel_manager_factory())
    assert "reloaded index gives the same answers" in text
    assert "ColBERT (MaxSim)" in text and "dense (cosine)" in text
    assert "<image/png>" in text
    assert "PLAID top 10 vs the exact index's top 10" in text and text.count("<image/png>") == 2
