"""Online serving under load: ``vllm-pool serve`` vs Sentence Transformers behind FastAPI.

The naive way users serve a model: a FastAPI ``def`` endpoint that calls
``SentenceTransformer.encode`` per request (requests run in FastAPI's thread pool). Both
servers answer ``POST /v1/embeddings`` with the same JSON, run one at a time in their own
process on 127.0.0.1; this process is the load generator. For 1, 8 and 64 concurrent
clients and short or mixed inputs (one text per request) it measures requests per second
and p50 / p99 latency, prints a table and writes ``benchmarks/results/serve_load.json``.

Each (inputs, clients) run starts with a warm-up at full concurrency (``--warmup``
requests, not counted), then measures ``--rounds`` rounds. For the vllm-pool server each
round is followed by an offline ``LLM.embed`` call on the same inputs in this process, while
the server idles: ``serve_vs_offline`` is the ratio of the best server round to the best
offline round, measured interleaved so that both see the same machine (a shared 2-core
machine drifts by 10-20% within minutes, and by up to half within an hour), and
``serve_vs_offline_paired`` the median over rounds of each server round's rate over the
offline round run right after it (the same minute of the machine). They tell what serving
costs over the engine.

    python -m benchmarks.serve_load [--requests 512] [--concurrency 1 8 64] [--rounds 3]

Each row also gives the CPU time spent per request by the server process (all its threads)
and by this load generator, and the offline run its CPU time per input: where the load
generator shares the server's cores, what serving costs beyond the model shows there. The
load generator is :mod:`benchmarks.http_load` (raw keep-alive HTTP/1.1, a fifth of
aiohttp's CPU per request; ``--client aiohttp`` for comparison). The offline run uses the
server's OpenMP settings (``vllm_pool.cli.SERVING_OPENMP``, set for this process unless the
environment sets a policy) so that the CPU figures compare.

``--head-of-line`` adds a row per server: the p99 latency of one-text requests from one
client while another client keeps sending maximum-size requests (``--hol-inputs`` texts of
``--hol-chars`` characters, the server's default limit per input), against the idle p99;
the target is a ratio under 10x.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import shlex
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

# `vllm_pool.cli.SERVING_OPENMP` (importing that loads torch), set before torch loads; the server inherits it
SERVING_OPENMP = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "20000"}
if not os.environ.get("OMP_WAIT_POLICY"):
    os.environ.update(SERVING_OPENMP)

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import CORPUS, ROOT, load_texts, machine, min_cosine, write_result  # noqa: E402

logger = logging.getLogger("serve_load")
QUERIES = ROOT / "demo" / "corpus" / "queries.jsonl"
SERVERS = ("vllm-pool", "st-fastapi")
JSON_HEADERS = {"content-type": "application/json"}


# ---------------------------------------------------------------------- the naive server
def serve_st(model: str, port: int, threads: int | None = None) -> None:
    """Sentence Transformers behind a FastAPI ``def`` endpoint (the naive baseline)."""
    import torch
    import uvicorn
    from fastapi import FastAPI
    from sentence_transformers import SentenceTransformer

    if threads:
        torch.set_num_threads(threads)
    st = SentenceTransformer(_model_path(model), device="cpu")
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {}

    @app.post("/v1/embeddings")
    def embeddings(body: dict[str, Any]) -> dict[str, Any]:
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vectors = st.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
        data = [{"index": i, "object": "embedding", "embedding": v.tolist()} for i, v in enumerate(vectors)]
        return {"object": "list", "model": model, "data": data}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _model_path(model: str) -> str:
    from vllm_pool.engine.model_source import resolve_model

    return str(resolve_model(model))


# ---------------------------------------------------------------------- load generation
def request_body(texts: str | list[str]) -> dict[str, Any]:
    """An embeddings request that asks for the model's cut of longer texts, as Sentence
    Transformers cuts them (without it the server refuses an over-long input, as vLLM's does)."""
    return {"input": texts, "truncate_prompt_tokens": -1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) used so far by process ``pid`` (Linux), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured_load(
    pid: int, url: str, texts: list[str], concurrency: int, n: int, client: str = "light"
) -> dict[str, Any]:
    """:func:`run_load` plus the CPU milliseconds per request of the server and of this process."""
    server0, own0 = process_cpu_seconds(pid), _own_cpu_seconds()
    res: dict[str, Any] = asyncio.run(run_load(url, texts, concurrency, n, client))
    server1, own1 = process_cpu_seconds(pid), _own_cpu_seconds()
    if server0 is not None and server1 is not None:
        res["server_cpu_ms_per_request"] = 1000 * (server1 - server0) / n
    res["client_cpu_ms_per_request"] = 1000 * (own1 - own0) / n
    return res


def start_server(
    kind: str, model: str, serve_args: str = "", st_threads: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if kind == "vllm-pool":
        cmd = ["-m", "vllm_pool.cli", "serve", model, "--log-level", "warning", *shlex.split(serve_args)]
    else:
        cmd = ["-m", "benchmarks.serve_load", "--serve-st", "--model", model]
        cmd += ["--st-threads", str(st_threads)] if st_threads else []
    cmd = [sys.executable, *cmd, "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError(f"{kind} server did not start")


async def run_load(
    url: str, texts: list[str], concurrency: int, n_requests: int, client: str = "light"
) -> dict[str, float]:
    """``n_requests`` one-text requests from ``concurrency`` clients; rps and latency percentiles.

    ``client``: ``light`` (:mod:`benchmarks.http_load`), ``aiohttp`` (one session, as vLLM's
    serving benchmark uses) or ``httpx``.
    """
    latencies: list[float] = []
    next_index = iter(range(n_requests))
    async with _poster(url, concurrency, client) as post:
        for t in texts[: min(8, len(texts))]:  # opens a connection, warms the server's caches
            await post("/v1/embeddings", request_body(t))

        async def worker() -> None:
            for i in next_index:
                t0 = time.perf_counter()
                await post("/v1/embeddings", request_body(texts[i % len(texts)]))
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": n_requests,
        "rps": n_requests / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


@contextlib.asynccontextmanager
async def _poster(
    url: str, connections: int, client: str = "light"
) -> AsyncIterator[Callable[[str, Any], Awaitable[Any]]]:
    """``post(path, body)``: POST JSON to ``url`` and check the status, with ``client``."""
    if client == "light":
        from benchmarks.http_load import light_client

        async with light_client(url, connections) as light:
            yield light.post
        return
    if client == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as hx:

            async def post_httpx(path: str, body: Any) -> None:
                (await hx.post(path, json=body)).raise_for_status()

            yield post_httpx
        return
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=300)
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:

        async def post_aiohttp(path: str, body: Any) -> None:
            async with session.post(path, json=body) as r:
                await r.read()
                r.raise_for_status()

        yield post_aiohttp


async def run_head_of_line(url: str, texts: list[str], big_body: bytes, n_small: int) -> dict[str, float]:
    """p99 of ``n_small`` one-text requests (one client) while a second client sends ``big_body``
    requests back to back; also the big requests' count and mean latency."""
    import httpx

    stop = asyncio.Event()
    big_latencies: list[float] = []
    # the small requests go through the same client as the idle run's (:func:`_poster`)
    async with httpx.AsyncClient(base_url=url, timeout=600) as big, _poster(url, 1) as post:

        async def send_big() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                r = await big.post("/v1/embeddings", content=big_body, headers=JSON_HEADERS)
                r.raise_for_status()
                big_latencies.append(time.perf_counter() - t0)

        task = asyncio.create_task(send_big())
        await asyncio.sleep(1.0)  # the first big request is being tokenized or run
        latencies = []
        for i in range(n_small):
            t0 = time.perf_counter()
            await post("/v1/embeddings", request_body(texts[i % len(texts)]))
            latencies.append(time.perf_counter() - t0)
        stop.set()
        await task
    latencies.sort()
    return {
        "requests": n_small,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "big_requests": len(big_latencies),
        "big_mean_s": statistics.mean(big_latencies) if big_latencies else float("nan"),
    }


def big_request(chars: int, n: int) -> bytes:
    """A request body of ``n`` texts of ``chars`` characters (corpus text repeated), each cut
    to the model's limit (``truncate_prompt_tokens: -1``; without it the server refuses an
    over-long input, as vLLM's does)."""
    text = " ".join(load_texts(CORPUS, 200))
    text = (text * (chars // max(len(text), 1) + 1))[:chars]
    return json.dumps(request_body([text] * n)).encode()


def head_of_line_rows(
    kind: str, url: str, texts: list[str], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """The idle p99 and the p99 beside maximum-size requests, as one result row."""
    idle = asyncio.run(run_load(url, texts, 1, args.hol_requests))
    body = big_request(args.hol_chars, args.hol_inputs)
    loaded = asyncio.run(run_head_of_line(url, texts, body, args.hol_requests))
    ratio = loaded["p99_ms"] / idle["p99_ms"]
    logger.info("%-10s head-of-line: idle p99 %.1f ms, beside %d-text requests p99 %.1f ms (%.1fx)",
                kind, idle["p99_ms"], args.hol_inputs, loaded["p99_ms"], ratio)  # fmt: skip
    return [
        {
            "server": kind, "inputs": "head-of-line", "concurrency": 1, "idle_p99_ms": idle["p99_ms"],
            "big_inputs": args.hol_inputs, "big_chars": args.hol_chars, "p99_ratio": ratio, **loaded,
        }
    ]  # fmt: skip


async def first_vectors(url: str, texts: list[str]) -> list[list[float]]:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        r = await client.post("/v1/embeddings", json=request_body(texts))
        r.raise_for_status()
        return [d["embedding"] for d in r.json()["data"]]


def input_sets(n: int) -> dict[str, list[str]]:
    short = [json.loads(line)["query"] for line in QUERIES.read_text().splitlines() if line.strip()]
    mixed = load_texts(CORPUS, n)
    return {"short": short, "mixed": mixed}


class Offline:
    """Rounds of one offline ``LLM.embed`` call on a run's inputs, in this process.

    Each round embeds the same ``n`` texts the server's round was sent (the input set
    repeated as the load generator repeats it), cut as the requests ask
    (``truncate_prompt_tokens=-1``); the first round of each input set is preceded by a
    warm-up call. :meth:`round` returns the inputs per second and the CPU milliseconds per
    input.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self._llm: Any = None
        self._warm: set[int] = set()

    def round(self, texts: list[str], n: int) -> tuple[float, float]:
        if self._llm is None:
            from vllm_pool import LLM

            self._llm = LLM(self.model)
        inputs = [texts[i % len(texts)] for i in range(n)]
        if id(texts) not in self._warm:
            self._llm.embed(inputs[:64], use_tqdm=False, truncate_prompt_tokens=-1)
            self._warm.add(id(texts))
        t0, c0 = time.perf_counter(), _own_cpu_seconds()
        self._llm.embed(inputs, use_tqdm=False, truncate_prompt_tokens=-1)
        seconds, cpu = time.perf_counter() - t0, _own_cpu_seconds() - c0
        return n / seconds, 1000 * cpu / n


def measure_runs(
    kind: str,
    proc: subprocess.Popen[bytes],
    url: str,
    sets: dict[str, list[str]],
    args: argparse.Namespace,
    offline: Offline | None,
) -> tuple[list[dict[str, Any]], dict[str, list[tuple[float, float]]]]:
    """Each (inputs, clients) run: warm-up, then ``args.rounds`` rounds, each followed by an
    offline round when ``offline`` is given. Returns the result rows (the best round, with
    every round's rps) and the offline rounds (inputs per second, CPU ms per input) per
    ``"inputs/clients"`` run."""
    rows: list[dict[str, Any]] = []
    offline_rounds: dict[str, list[tuple[float, float]]] = {}
    for inputs in args.inputs:
        for conc in args.concurrency:
            n = max(args.requests, conc)
            if args.warmup:
                asyncio.run(run_load(url, sets[inputs], conc, max(args.warmup, conc), args.client))
            rounds = []
            for _ in range(args.rounds):
                rounds.append(measured_load(proc.pid, url, sets[inputs], conc, n, args.client))
                if offline is not None:
                    offline_rounds.setdefault(f"{inputs}/{conc}", []).append(offline.round(sets[inputs], n))
            res = max(rounds, key=lambda r: r["rps"])
            logger.info("%-10s %-5s %3d clients: %7.1f req/s  p50 %6.1f ms  p99 %6.1f ms  (rounds: %s)",
                        kind, inputs, conc, res["rps"], res["p50_ms"], res["p99_ms"],
                        " ".join(f"{r['rps']:.1f}" for r in rounds))  # fmt: skip
            rows.append({"server": kind, "inputs": inputs, "concurrency": conc, **res,
                         "rps_rounds": [r["rps"] for r in rounds]})  # fmt: skip
    return rows, offline_rounds


def print_table(rows: list[dict[str, Any]]) -> None:
    hol = [r for r in rows if r["inputs"] == "head-of-line"]
    rows = [r for r in rows if r["inputs"] != "head-of-line"]
    by_key = {(r["server"], r["inputs"], r["concurrency"]): r for r in rows}
    head = (
        "| inputs | clients | vllm-pool req/s | p50 / p99 ms | ST+FastAPI req/s | p50 / p99 ms | speed-up |"
    )
    print(head)
    print("|" + "---|" * 7)
    for inputs, conc in sorted(
        {(r["inputs"], r["concurrency"]) for r in rows}, key=lambda k: (k[0] != "short", k[1])
    ):
        ours, base = by_key.get(("vllm-pool", inputs, conc)), by_key.get(("st-fastapi", inputs, conc))
        cells = []
        for r in (ours, base):
            cells += [f"{r['rps']:.1f}", f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f}"] if r else ["-", "-"]
        ratio = f"{ours['rps'] / base['rps']:.2f}x" if ours and base else "-"
        print(f"| {inputs} | {conc} | " + " | ".join(cells) + f" | {ratio} |")
    if hol:
        print("\n| server | idle p99 ms | p99 ms beside maximum-size requests | ratio (target < 10x) |")
        print("|---|---|---|---|")
        for r in hol:
            print(f"| {r['server']} | {r['idle_p99_ms']:.0f} | {r['p99_ms']:.0f} | {r['p99_ratio']:.1f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--requests", type=int, default=512, help="requests per round of a run")
    ap.add_argument("--rounds", type=int, default=3, help="measured rounds per run (the best is reported)")
    ap.add_argument("--warmup", type=int, default=256, help="requests sent before a run's rounds (0: none)")
    ap.add_argument("--client", default="light", choices=["light", "aiohttp", "httpx"], help="load generator")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--inputs", nargs="+", default=["short", "mixed"], choices=["short", "mixed"])
    ap.add_argument("--servers", nargs="+", default=list(SERVERS), choices=SERVERS)
    ap.add_argument(
        "--serve-args", default="", help="extra `vllm-pool serve` options, e.g. '--num-threads 2'"
    )
    ap.add_argument(
        "--st-threads", type=int, default=None, help="torch threads of the ST server (default: torch's)"
    )
    ap.add_argument("--name", default="serve_load", help="result file name")
    ap.add_argument("--head-of-line", action="store_true", help="add the head-of-line row")
    ap.add_argument("--hol-inputs", type=int, default=16, help="texts per maximum-size request")
    ap.add_argument("--hol-chars", type=int, default=100_000, help="characters per text of those requests")
    ap.add_argument("--hol-requests", type=int, default=100, help="one-text requests measured")
    ap.add_argument(
        "--no-offline", action="store_true", help="skip the offline LLM.embed baseline (serve_vs_offline)"
    )
    ap.add_argument("--serve-st", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=8001, help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.serve_st:
        serve_st(args.model, args.port, args.st_threads)
        return

    sets = input_sets(max(args.requests, 64))
    rows: list[dict[str, Any]] = []
    vectors: dict[str, list[list[float]]] = {}
    offline_rounds: dict[str, list[tuple[float, float]]] = {}
    for kind in args.servers:
        proc, url = start_server(kind, args.model, args.serve_args, args.st_threads)
        offline = Offline(args.model) if kind == "vllm-pool" and not args.no_offline else None
        try:
            vectors[kind] = asyncio.run(first_vectors(url, sets["mixed"][:16]))
            runs, measured = measure_runs(kind, proc, url, sets, args, offline)
            rows += runs
            offline_rounds.update(measured)
            if args.head_of_line:
                rows += head_of_line_rows(kind, url, sets["short"], args)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    result: dict[str, Any] = {
        "model": args.model,
        "machine": machine(),
        "settings": {
            "serve_args": args.serve_args,
            "requests": args.requests,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "client": args.client,
            "concurrency": args.concurrency,
            "texts_per_request": 1,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
        },
        "results": rows,
    }
    if len(vectors) == 2:
        result["min_cosine_vs_st"] = min_cosine(*(vectors[k] for k in SERVERS))
    if offline_rounds:
        ours = {f"{r['inputs']}/{r['concurrency']}": r for r in rows if r["server"] == "vllm-pool"}
        best = {key: max(rps for rps, _ in rounds) for key, rounds in offline_rounds.items()}
        result["offline_inputs_per_s"] = best
        result["offline_rounds"] = {key: [rps for rps, _ in rounds] for key, rounds in offline_rounds.items()}
        result["offline_cpu_ms_per_input"] = {
            key: statistics.median(cpu for _, cpu in rounds) for key, rounds in offline_rounds.items()
        }
        result["serve_vs_offline"] = {key: ours[key]["rps"] / best[key] for key in best}
        result["serve_vs_offline_paired"] = {  # each server round over the offline round after it
            key: statistics.median(
                srv / off for srv, (off, _) in zip(ours[key]["rps_rounds"], offline_rounds[key])
            )
            for key in best
        }

    path = write_result(args.name, result)
    print_table(rows)
    cpu = result.get("offline_cpu_ms_per_input", {})
    ours = {f"{r['inputs']}/{r['concurrency']}": r for r in rows if r["server"] == "vllm-pool"}
    for key, ratio in result.get("serve_vs_offline", {}).items():
        inputs, conc = key.split("/")
        paired = result["serve_vs_offline_paired"][key]
        line = f"vllm-pool serve, {inputs} inputs, {conc} clients: {ratio:.2f}x offline LLM.embed"
        line += f" (paired rounds: median {paired:.2f}x)"
        r = ours[key]
        if "server_cpu_ms_per_request" in r:
            server, client = r["server_cpu_ms_per_request"], r["client_cpu_ms_per_request"]
            line += f" (CPU ms per input: offline {cpu[key]:.1f}, server {server:.1f} + load {client:.1f})"
        print(line)
    if "min_cosine_vs_st" in result:
        print(f"min cosine vllm-pool vs ST: {result['min_cosine_vs_st']:.6f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
