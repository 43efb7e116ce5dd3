"""The distribution builds as a wheel whose layout maps the top-level folders into `vllm_pool`."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_builds_and_imports(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = wheels.glob("vllm_pool-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for expected in (
        "vllm_pool/__init__.py",
        "vllm_pool/py.typed",
        "vllm_pool/engine/llm.py",
        "vllm_pool/retrievers/__init__.py",
        "vllm_pool/integrations/__init__.py",
        "vllm_pool/integrations/langchain/__init__.py",
        "vllm_pool/integrations/llamaindex/__init__.py",
        "vllm_pool/engine/server/__init__.py",
    ):
        assert expected in names
    assert not any(n.startswith(("tests/", "engine/", "benchmarks/")) for n in names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)  # Apache-2.0 section 4(a)

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import vllm_pool, vllm_pool.engine, vllm_pool.retrievers;"
        "from vllm_pool import LLM, PoolingParams;"
        "assert vllm_pool.__file__.startswith(sys.argv[1]), vllm_pool.__file__;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('langchain_core', 'llama_index', 'fastapi')];"
        "assert not bad, bad; print('ok')"
    )
    # run outside the repo so the source tree is not importable
    out = subprocess.run(
        [sys.executable, "-c", code, str(site)], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "ok"


def test_editable_core_import_is_light():
    code = (
        "import sys, vllm_pool;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('langchain_core', 'llama_index', 'fastapi')];"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
