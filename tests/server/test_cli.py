"""`vllm-pool serve`: argument parsing, and the real command on a loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from vllm_pool.cli import build_parser, llm_kwargs


def test_serve_options_are_llm_options():
    args = build_parser().parse_args(
        [
            "serve", "some/model", "--runner", "pooling", "--convert", "embed",
            "--pooler-config", '{"pooling_type": "MEAN", "normalize": false}',
            "--hf-overrides", '{"matryoshka_dimensions": [256]}', "--dtype", "bfloat16", "--device", "cpu",
            "--max-num-batched-tokens", "4096", "--port", "9000", "--api-key", "k",
        ]
    )  # fmt: skip
    assert args.model == "some/model" and args.port == 9000 and args.api_key == "k"
    assert args.host == "127.0.0.1" and args.max_inputs == 2048
    kw = llm_kwargs(args)
    assert kw["pooler_config"] == {"pooling_type": "MEAN", "normalize": False}
    assert kw["hf_overrides"] == {"matryoshka_dimensions": [256]}
    assert kw["max_num_batched_tokens"] == 4096 and kw["dtype"] == "bfloat16" and kw["runner"] == "pooling"


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "m", "--pooler-config", "{bad"],
        ["serve", "m", "--hf-overrides", "[1]"],
        ["serve", "m", "--max-num-batched-tokens", "0"],
        ["serve", "m", "--runner", "generate"],
        [],
    ],
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2


def test_importing_the_package_does_not_import_fastapi():
    code = "import sys, vllm_pool, vllm_pool.engine, vllm_pool.cli; print('fastapi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_end_to_end():
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["VLLM_POOL_API_KEY"] = "k"
    cmd = [sys.executable, "-m", "vllm_pool.cli", "serve", "--port", str(port)]
    cmd += ["--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        r = httpx.post(
            f"{url}/v1/embeddings",
            json={"input": "hello", "model": "sentence-transformers/all-MiniLM-L6-v2"},
            headers={"Authorization": "Bearer k"},
            timeout=30,
        )
        assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 384
        assert httpx.get(f"{url}/docs", timeout=30).status_code == 401  # the key from the environment
        docs = httpx.get(f"{url}/openapi.json", headers={"Authorization": "Bearer k"}, timeout=30)
        assert docs.status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "vllm-pool serving sentence-transformers/all-MiniLM-L6-v2" in out
    assert "Traceback" not in out


def test_api_key_sources(tmp_path, caplog):
    from vllm_pool.cli import api_key, server_config_kwargs

    parse = build_parser().parse_args
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    key_file.chmod(0o600)
    env = {"VLLM_POOL_API_KEY": "env"}
    assert api_key(parse(["serve", "--api-key-file", str(key_file)]), env) == "s3cret"
    assert api_key(parse(["serve"]), {"VLLM_POOL_API_KEY": "env"}) == "env"
    assert api_key(parse(["serve"]), {}) is None
    with caplog.at_level("WARNING", logger="vllm_pool.cli"):
        assert api_key(parse(["serve", "--api-key", "flag"]), {"VLLM_POOL_API_KEY": "env"}) == "flag"
    assert "visible in the process list" in caplog.text
    with pytest.raises(ValueError, match="not both"):
        api_key(parse(["serve", "--api-key", "a", "--api-key-file", str(key_file)]), {})
    with pytest.raises(ValueError, match="cannot read it"):
        api_key(parse(["serve", "--api-key-file", str(tmp_path / "missing")]), {})
    key_file.write_text("\n")
    with pytest.raises(ValueError, match="the file is empty"):
        api_key(parse(["serve", "--api-key-file", str(key_file)]), {})
    args = parse(["serve", "m", "--max-body-bytes", "1000", "--body-timeout", "2.5"])
    kwargs = server_config_kwargs(args, "k")
    assert kwargs["max_body_bytes"] == 1000 and kwargs["body_timeout"] == 2.5 and kwargs["api_key"] == "k"
    assert "max_input_chars" not in kwargs and "header_timeout" not in kwargs  # ServerConfig's defaults
    with pytest.raises(SystemExit):
        parse(["serve", "--header-timeout", "0"])
    assert "batch_wait" not in kwargs
    assert server_config_kwargs(parse(["serve", "m", "--batch-wait", "0"]), None)["batch_wait"] == 0
    with pytest.raises(SystemExit):
        parse(["serve", "--batch-wait", "-1"])


def test_batch_wait_reaches_the_engine_core(default_llm):
    from vllm_pool.engine.server import ServerConfig, build_app

    build_app(default_llm, ServerConfig(batch_wait=0.0))
    assert default_llm.core.max_gather_s == 0.0
    build_app(default_llm)
    assert default_llm.core.max_gather_s == ServerConfig().batch_wait > 0


def test_serve_freezes_the_startup_heap_before_serving(monkeypatch):
    import gc

    import torch
    import uvicorn

    from vllm_pool import cli

    seen = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.append(gc.get_freeze_count()))
    gc.unfreeze()
    try:
        threads = str(torch.get_num_threads())  # the other tests keep theirs
        args = build_parser().parse_args(
            ["serve", "--port", "0", "--log-level", "warning", "--num-threads", threads]
        )
        assert cli.serve(args) == 0
    finally:
        gc.unfreeze()  # give the objects back to the collector for the other tests
    assert len(seen) == 1 and seen[0] > 10_000


def test_cpu_threads_every_core_with_passive_openmp(monkeypatch):
    from vllm_pool.cli import cpu_threads

    cores = len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert cpu_threads(None, "cpu") == cores
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # spinning threads: leave a core to HTTP
    assert cpu_threads(None, "cpu") == max(1, cores - 1)
    assert cpu_threads(3, "cpu") == 3
    assert cpu_threads(None, "cuda") is None


def test_console_script_reexecs_with_passive_openmp(monkeypatch):
    """OpenMP reads its wait policy when torch loads: `serve` re-runs itself with it set."""
    from vllm_pool import cli

    calls = []
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setattr(cli.os, "execv", lambda exe, args: calls.append(args))
    cli.passive_openmp(["serve", "m", "--port", "1"])
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert os.environ["GOMP_SPINCOUNT"] == cli.SERVING_OPENMP["GOMP_SPINCOUNT"]  # a short spin first
    assert calls and calls[0][1:] == ["-m", "vllm_pool.cli", "serve", "m", "--port", "1"]
    calls.clear()
    cli.passive_openmp(["serve", "m"])  # already set (the re-run): no loop
    assert calls == []
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("GOMP_SPINCOUNT", "500")  # the user's spin count is kept
    cli.passive_openmp(["serve", "m"])
    assert os.environ["GOMP_SPINCOUNT"] == "500" and len(calls) == 1


def test_serve_leaves_packing_to_the_engine_default():
    """One rule for ``LLM`` and ``vllm-pool serve`` (``packing.default_on``): no special case."""
    from vllm_pool.cli import serving_engine_args

    def packed(*flags: str) -> bool | None:
        return serving_engine_args(build_parser().parse_args(["serve", "--device", "cpu", *flags])).packed

    assert packed() is None and packed("--dtype", "bfloat16") is None
    assert packed("--no-packed") is False and packed("--packed") is True
