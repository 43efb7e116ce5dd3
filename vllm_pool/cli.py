"""The ``vllm-pool`` command: ``vllm-pool serve MODEL [options]``.

The engine options are those of :class:`vllm_pool.LLM`; the server needs the ``server``
extra (``pip install 'vllm-pool[server]'``).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from vllm_pool.engine.model_source import DEFAULT_MODEL

logger = logging.getLogger("vllm_pool.cli")


def _json_arg(name: str):
    def parse(text: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"{name} must be a JSON object: {exc}") from exc
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"{name} must be a JSON object, got {type(value).__name__}")
        return value

    return parse


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vllm-pool", description="vllm-pool: an in-process pooling engine.")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="Serve a model over the OpenAI-compatible HTTP API.")
    s.add_argument(
        "model", nargs="?", default=DEFAULT_MODEL, help=f"local folder or hub id ({DEFAULT_MODEL})"
    )
    g = s.add_argument_group("engine (the options of LLM)")
    g.add_argument("--runner", default="auto", choices=["auto", "pooling"])
    g.add_argument("--convert", default="auto", choices=["auto", "embed", "classify", "none"])
    g.add_argument("--pooler-config", type=_json_arg("--pooler-config"), default=None, help="JSON object")
    g.add_argument("--hf-overrides", type=_json_arg("--hf-overrides"), default=None, help="JSON object")
    g.add_argument("--dtype", default="auto")
    g.add_argument("--device", default="auto")
    g.add_argument("--trust-remote-code", action="store_true")
    g.add_argument("--max-model-len", type=_positive, default=None)
    g.add_argument("--max-num-batched-tokens", type=_positive, default=None, help="token budget of a batch")
    g.add_argument("--max-num-seqs", type=_positive, default=None)
    g.add_argument("--revision", default=None)
    h = s.add_argument_group("server")
    h.add_argument("--host", default="127.0.0.1")
    h.add_argument("--port", type=int, default=8000)
    h.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (not on /health)")
    h.add_argument("--served-model-name", nargs="+", default=None, help="names clients may use as model")
    h.add_argument("--max-inputs", type=_positive, default=2048, help="inputs per request (413 above)")
    h.add_argument("--max-request-tokens", type=_positive, default=524_288, help="tokens per request (413)")
    h.add_argument(
        "--num-threads",
        type=_positive,
        default=None,
        help="torch CPU threads (default on CPU: every core, with OpenMP threads sleeping when "
        "idle; all cores but one under another OMP_WAIT_POLICY)",
    )
    h.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def llm_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`LLM` keyword arguments of parsed ``serve`` arguments."""
    return {
        "runner": args.runner,
        "convert": args.convert,
        "pooler_config": args.pooler_config,
        "hf_overrides": args.hf_overrides,
        "dtype": args.dtype,
        "device": args.device,
        "trust_remote_code": args.trust_remote_code,
        "max_model_len": args.max_model_len,
        "max_num_batched_tokens": args.max_num_batched_tokens,
        "max_num_seqs": args.max_num_seqs,
        "revision": args.revision,
    }


def cpu_threads(requested: int | None, device_type: str) -> int | None:
    """Torch threads for serving on CPU: every core when OpenMP threads sleep while they
    wait (``OMP_WAIT_POLICY=PASSIVE``, the ``vllm-pool serve`` default), else all but one.

    Spinning OpenMP threads that hold every core starve the event loop that parses HTTP
    (measured on 2 cores: a batch of 4 short texts took 0.5 s instead of 0.04 s); passive
    ones do not, and the model gets the last core back. ``None``: leave torch's setting (GPU).
    """
    if requested is not None:
        return requested
    if device_type != "cpu":
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        return cores
    return max(1, cores - 1)


def passive_openmp(argv: Sequence[str]) -> None:
    """Re-run this command with ``OMP_WAIT_POLICY=PASSIVE`` unless a policy is set.

    OpenMP reads the policy once, when torch loads it, so it cannot change in a running
    process: the command replaces itself (``os.execv``) with the variable set.
    """
    if os.environ.get("OMP_WAIT_POLICY"):
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "vllm_pool.cli", *argv])


def freeze_startup_heap() -> None:
    """Move everything loaded so far (torch, transformers, the model) out of the garbage
    collector's view (``gc.freeze``), as vLLM's server does.

    A full collection otherwise walks those few hundred thousand objects: about 0.2 s on this
    machine, landing on whichever request happens to trigger it.
    """
    gc.collect()
    gc.freeze()
    logger.debug("Froze %d startup objects", gc.get_freeze_count())


def serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from vllm_pool.engine.server import ServerConfig, build_app
    except ImportError as exc:
        print(
            f"vllm-pool serve needs the server extra: pip install 'vllm-pool[server]' ({exc})",
            file=sys.stderr,
        )
        return 1
    from vllm_pool import LLM

    try:
        llm = LLM(args.model, **llm_kwargs(args))
    except (ValueError, TypeError, OSError) as exc:
        print(f"vllm-pool serve: cannot load {args.model!r}: {exc}", file=sys.stderr)
        return 1
    threads = cpu_threads(args.num_threads, llm.model_config.device.type)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
        logger.info("Using %d torch CPU threads", threads)
    config = ServerConfig(
        served_model_names=args.served_model_name or [args.model],
        api_key=args.api_key,
        max_inputs=args.max_inputs,
        max_request_tokens=args.max_request_tokens,
    )
    app = build_app(llm, config)
    freeze_startup_heap()
    print(
        f"vllm-pool serving {llm.model_name} (tasks: {', '.join(llm.get_supported_tasks())}) "
        f"on http://{args.host}:{args.port}" + (" with an API key" if args.api_key else ""),
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vllm-pool`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        if argv is None:  # the console script (in-process callers keep their process)
            passive_openmp(sys.argv[1:])
        return serve(args)
    return 2  # pragma: no cover  (argparse requires a command)


if __name__ == "__main__":
    sys.exit(main())
