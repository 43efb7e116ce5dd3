"""``vllm-pool`` fixes from a bug hunt: one-line errors for a model without an embed task and
for corrupt weights, one re-run under an empty ``OMP_WAIT_POLICY``, ``--port`` checked and
bound before the model loads (``--port 0`` announced with its real port), no MODEL swallowed
by ``--served-model-name``, an empty text with a prompt as Sentence Transformers embeds it,
SIGTERM removing the temporary output, an unwritable output folder found before loading,
and vLLM's underscore flags. References: ``LLM.embed`` and ``SentenceTransformer.encode``."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tiny_models

from vllm_pool import LLM, cli, cli_args, embed_job
from vllm_pool.cli import build_parser, main

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
TEXTS = ["", "hello world", "a second text"]
GUARD = "VLLM_POOL_OPENMP_REEXEC"  # cli.REEXEC_GUARD: set for the one re-run of `serve`


def _never_loaded(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the model was loaded")


def _ours(err: str) -> list[str]:
    """The command's own lines of ``err`` (no traceback; transformers' progress bars left out)."""
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("vllm-pool")]


def _job(tmp_path: Path, model: Path | str, *extra: str, output: str = "out.npy") -> list[str]:
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return ["embed", str(model), "-i", str(src), "-o", str(tmp_path / output), "--no-progress", *extra]


@pytest.fixture(scope="module")
def st_prompt_dir(tiny_bert, tmp_path_factory) -> Path:
    """Mean pooling with ``include_prompt: false`` and a ``query`` prompt."""
    folder = tmp_path_factory.mktemp("st_prompt") / "model"
    return tiny_models.sentence_transformer(
        folder, tiny_bert, pooling="mean", include_prompt=False, prompts={"query": "query: "}
    )


def test_embed_on_a_model_without_embed_task_is_one_line(tiny_bert_cls3, tmp_path, capsys):
    with pytest.raises(ValueError) as direct:  # the engine's own message
        LLM(str(tiny_bert_cls3)).embed(["x"], use_tqdm=False)
    assert main(_job(tmp_path, tiny_bert_cls3)) == 1
    assert _ours(capsys.readouterr().err) == [f"vllm-pool embed: {direct.value}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_corrupt_weights_are_one_line_for_embed_and_serve(tiny_bert, tmp_path, capsys, caplog):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_bert, corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # an interrupted download
    want = re.compile(
        rf"^vllm-pool (embed|serve): cannot load '{re.escape(str(corrupt))}': SafetensorError: \S"
    )
    assert main(_job(tmp_path, corrupt)) == 1
    err = _ours(capsys.readouterr().err)
    assert len(err) == 1 and want.match(err[0]), err
    with caplog.at_level("DEBUG", logger="vllm_pool.cli"):  # the traceback at --log-level debug
        assert main(["serve", str(corrupt), "--port", "0", "--log-level", "debug"]) == 1
    err = _ours(capsys.readouterr().err)
    assert len(err) == 1 and want.match(err[0]) and err[0].startswith("vllm-pool serve"), err
    assert any(r.exc_info and type(r.exc_info[1]).__name__ == "SafetensorError" for r in caplog.records)


def test_empty_omp_wait_policy_is_replaced_and_the_command_reruns_once(monkeypatch):
    calls: list[list[str]] = []
    monkeypatch.setenv("OMP_WAIT_POLICY", "")  # docker-compose's OMP_WAIT_POLICY=${OMP_WAIT_POLICY}
    monkeypatch.setenv("GOMP_SPINCOUNT", "")
    monkeypatch.setenv(GUARD, str(os.getppid()))  # inherited from another serve: not this process's
    monkeypatch.setattr(cli.os, "execv", lambda exe, args: calls.append(args))
    cli.passive_openmp(["serve", "m"])
    assert len(calls) == 1 and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert os.environ["GOMP_SPINCOUNT"] == cli.SERVING_OPENMP["GOMP_SPINCOUNT"]
    monkeypatch.setenv("OMP_WAIT_POLICY", "")  # even were the policy emptied again: the re-run
    cli.passive_openmp(["serve", "m"])  # does not re-run, and takes the guard out of the environment
    assert len(calls) == 1 and GUARD not in os.environ


def test_empty_omp_wait_policy_does_not_loop(tmp_path):
    """The real command: before the fix it re-ran itself until killed."""
    env = {**ENV, "OMP_WAIT_POLICY": ""}
    env.pop(GUARD, None)
    cmd = [sys.executable, "-m", "vllm_pool.cli", "serve", str(tmp_path / "missing"), "--port", "0"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.count("vllm-pool serve: cannot load") == 1, out.stderr


@pytest.mark.parametrize("port", ["70000", "-1", "65536", "80.5"])
def test_port_out_of_range_exits_2(port, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["serve", "--port", port])
    assert exc.value.code == 2
    assert f"argument --port: must be an integer from 0 (a free port) to 65535, got {port}" in (
        capsys.readouterr().err
    )
    assert build_parser().parse_args(["serve", "--port", "65535"]).port == 65535


def test_port_in_use_fails_before_the_model_loads(monkeypatch, capsys):
    monkeypatch.setattr(LLM, "from_engine_args", _never_loaded)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        args = build_parser().parse_args(["serve", "--port", str(port), "--log-level", "warning"])
        assert cli.serve(args) == 1
    err = _ours(capsys.readouterr().err)
    assert err == [f"vllm-pool serve: --port {port}: 127.0.0.1:{port} is already in use"]


def test_bound_socket_gives_accepted_connections_tcp_nodelay():
    """uvicorn serves ``fd=`` as a socket of unknown family, on whose connections asyncio sets
    no ``TCP_NODELAY``: they inherit the listening socket's."""
    with cli_args.bind_socket("127.0.0.1", 0) as sock:
        sock.listen()
        as_uvicorn = socket.fromfd(sock.fileno(), socket.AF_UNIX, socket.SOCK_STREAM)
        with as_uvicorn, socket.create_connection(sock.getsockname()):
            conn, _ = as_uvicorn.accept()
            with conn:
                assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_port_0_serves_on_the_announced_port(tiny_bert):
    cmd = [sys.executable, "-m", "vllm_pool.cli", "serve", str(tiny_bert), "--port", "0"]
    proc = subprocess.Popen([*cmd, "--log-level", "warning"], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()  # printed once the app is built, after the socket is bound
        found = re.search(r" on http://127\.0\.0\.1:(\d+)$", banner.strip())
        assert found and int(found.group(1)) > 0, banner
        url = f"http://127.0.0.1:{found.group(1)}"
        r = httpx.post(f"{url}/v1/embeddings", json={"input": "hello world"}, timeout=30)
        assert r.status_code == 200
        want = LLM(str(tiny_bert)).embed(["hello world"], use_tqdm=False)[0].outputs.embedding
        np.testing.assert_allclose(r.json()["data"][0]["embedding"], want, atol=1e-5)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_served_model_name_does_not_swallow_model(monkeypatch, capsys):
    served: list[Any] = []
    monkeypatch.setattr(cli, "serve", lambda args: served.append(args) or 0)
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--served-model-name", "emb", "some/model"])
    assert exc.value.code == 2 and served == []
    err = capsys.readouterr().err
    assert (
        "give MODEL before --served-model-name" in err and "serve some/model --served-model-name emb" in err
    )
    # vLLM's order, a single name for the default model, the default model given by name
    default = str(build_parser().parse_args(["serve"]).model)
    for argv, model, names in [
        (["serve", "m", "--served-model-name", "a", "b"], "m", ["a", "b"]),
        (["serve", "--served-model-name", "a"], default, ["a"]),
        (["serve", default, "--served-model-name", "a", "b"], default, ["a", "b"]),
    ]:
        assert main(argv) == 0
        assert (served[-1].model, served[-1].served_model_name) == (model, names)
        assert type(served[-1].model) is str


def test_empty_text_with_a_prompt_matches_sentence_transformers(st_prompt_dir, tmp_path):
    from sentence_transformers import SentenceTransformer
    from vllm_pool.integrations._engines import embed_texts

    want = SentenceTransformer(str(st_prompt_dir), device="cpu").encode(TEXTS, prompt="query: ")
    assert main(_job(tmp_path, st_prompt_dir, "--prompt-name", "query")) == 0
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), want, atol=1e-5)
    got = embed_texts(LLM(str(st_prompt_dir)), TEXTS, prefix="query: ")
    np.testing.assert_allclose(np.array(got), want, atol=1e-5)


SLOW_WRITE = """
import sys, time
from contextlib import contextmanager
from vllm_pool import cli, embed_job

real = embed_job.atomic_file

@contextmanager
def paused(path, mode):  # the real temporary file, held open until the signal comes
    with real(path, mode) as f:
        yield f
        f.flush()
        print("writing", flush=True)
        time.sleep(60)

embed_job.atomic_file = paused
sys.exit(cli.main(sys.argv[1:]))
"""


def test_sigterm_while_writing_leaves_no_temporary_file(tiny_bert, tmp_path):
    argv = _job(tmp_path, tiny_bert, output="out.jsonl")
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITE, *argv], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout.readline() == b"writing\n"
    assert len(list(tmp_path.glob(".out.jsonl.*.tmp"))) == 1
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_unwritable_output_folder_fails_before_loading(tmp_path):
    if os.geteuid() == 0:  # root writes through permissions: a file system that refuses files
        folder = Path("/sys")
        if not folder.is_dir():
            pytest.skip("no /sys")
    else:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
    args = build_parser().parse_args(_job(tmp_path, "m")[:4] + ["-o", str(folder / "out.npy")])
    with pytest.raises(embed_job.JobError, match=rf"^--output folder {folder} is not writable \(\w"):
        embed_job.run(args, _never_loaded)


def test_normalize_flags_rewrites_names_only():
    argv = ["serve", "m", "--max_num_seqs=8", "--served_model_name", "a_b", "-i", "x_y", "--", "--x_y"]
    assert cli_args.normalize_flags(argv) == [
        "serve", "m", "--max-num-seqs=8", "--served-model-name", "a_b", "-i", "x_y", "--", "--x_y",
    ]  # fmt: skip


def test_underscore_flags_as_vllm(tiny_bert, tmp_path):
    lines = [{"body": "hello world", "my_id": 5}, {"body": "a second text", "my_id": 6}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    previous = signal.getsignal(signal.SIGTERM)
    argv = ["embed", str(tiny_bert), "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl")]
    argv += ["--text_field=body", "--id_field", "my_id", "--no_progress", "--max_model_len", "16"]
    assert main(argv) == 0
    assert signal.getsignal(signal.SIGTERM) is previous  # the job's SIGTERM handler is gone
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    want = LLM(str(tiny_bert), max_model_len=16).embed([x["body"] for x in lines], use_tqdm=False)
    assert [r["id"] for r in rows] == [5, 6]
    np.testing.assert_allclose([r["embedding"] for r in rows], [o.outputs.embedding for o in want], atol=1e-6)
