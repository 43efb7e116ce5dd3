"""The ``vllm-pool`` command: ``vllm-pool serve MODEL [options]`` and
``vllm-pool embed MODEL --input FILE --output FILE [options]`` (:mod:`vllm_pool.embed_job`).

The engine flags are generated from :class:`~vllm_pool.engine.args.EngineArgs` (every
option of :class:`vllm_pool.LLM`, with its default in ``--help``); the server needs the ``server``
extra (``pip install 'vllm-pool[server]'``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from vllm_pool import cli_args
from vllm_pool.engine.args import EngineArgs, positive_int

logger = logging.getLogger("vllm_pool.cli")

API_KEY_ENV = "VLLM_POOL_API_KEY"


def _seconds(allow_zero: bool) -> Callable[[str], float]:
    """The argparse type of a positive number of seconds, or also ``0`` with ``allow_zero``."""

    def seconds(text: str) -> float:
        value = float(text)
        if not (value >= 0 if allow_zero else value > 0):
            zero = "0 or " if allow_zero else ""
            raise argparse.ArgumentTypeError(f"must be {zero}a positive number of seconds, got {text}")
        return value

    # argparse names the type in "invalid <name> value: 'x'": the names of the two former functions
    seconds.__name__ = "_seconds_or_zero" if allow_zero else "_seconds"
    return seconds


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every ``--help`` line of an optional flag ends with its default (lines that show it
    already are kept as they are)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.help is None or "default" in action.help:
            return action.help  # required, or the help says its default in words
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from vllm_pool import __version__, embed_job

    parser = argparse.ArgumentParser(
        prog="vllm-pool",
        description="vllm-pool: an in-process pooling engine.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vllm-pool {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser(
        "embed",
        help="Embed a .txt / .jsonl file of texts into a .npy / .jsonl file (a batch job).",
        description=(embed_job.__doc__ or "").split("\n\n", 1)[-1].replace("``", ""),
        formatter_class=_HelpFormatter,
    )
    embed_job.add_arguments(e.add_argument_group("job"))
    EngineArgs.add_cli_args(e.add_argument_group("engine (the options of LLM, from EngineArgs)"))
    e.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"], help="logging level"
    )
    s = sub.add_parser(
        "serve",
        help="Serve a model over the OpenAI-compatible HTTP API.",
        description="Serve a model over the OpenAI-compatible HTTP API.",
        formatter_class=_HelpFormatter,
    )
    EngineArgs.add_cli_args(s.add_argument_group("engine (the options of LLM, from EngineArgs)"))
    cli_args.mark_default_model(s)
    h = s.add_argument_group("server")
    h.add_argument("--host", default="127.0.0.1", help="address to listen on")
    h.add_argument(
        "--port", type=cli_args.port_number, default=8000, help="port to listen on (0: a free one)"
    )
    h.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' (not on /health); visible in the process list, "
        f"prefer {API_KEY_ENV} or --api-key-file",
    )
    h.add_argument("--api-key-file", default=None, help="read the API key from this file (first line)")
    h.add_argument("--served-model-name", nargs="+", default=None, help="names clients may use as model")
    h.add_argument("--max-inputs", type=positive_int, default=2048, help="inputs per request (413 above)")
    h.add_argument(
        "--max-request-tokens", type=positive_int, default=524_288, help="tokens per request (413)"
    )
    # Defaults of the limits: those of ServerConfig (16 MiB, 100,000 characters, 30 s, 10 s).
    h.add_argument(
        "--max-body-bytes",
        type=positive_int,
        default=None,
        help="request body bytes (413 above; default: 16 MiB)",
    )
    h.add_argument(
        "--max-input-chars",
        type=positive_int,
        default=None,
        help="characters per text (413; default: 100,000)",
    )
    h.add_argument(
        "--body-timeout",
        type=_seconds(allow_zero=False),
        default=None,
        help="seconds to receive a body (then 408; default: 30)",
    )
    h.add_argument(
        "--header-timeout",
        type=_seconds(allow_zero=False),
        default=None,
        help="seconds a connection may take to send a complete request head (closed after; default: 10)",
    )
    h.add_argument(
        "--batch-wait", type=_seconds(allow_zero=True), default=None,
        help="after a batch that answered several clients, seconds the engine may wait (at most "
        "half that batch's time) for their next requests, to run fuller batches; 0: never "
        "(default: 0.1)",
    )  # fmt: skip
    h.add_argument(
        "--answer-half-closed", action="store_true",
        help="answer a client that half-closes its connection after sending a request; a client "
        "that closed its socket is then seen only when its answer is written, so its queued inputs "
        "still run (default: off: the client's end of file is a disconnect, as in uvicorn and vLLM)",
    )  # fmt: skip
    h.add_argument(
        "--num-threads",
        type=positive_int,
        default=None,
        help="torch CPU threads (default on CPU: every core, with OpenMP threads sleeping when "
        "idle; all cores but one under another OMP_WAIT_POLICY)",
    )
    h.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="logging level"
    )
    return parser


def embed(args: argparse.Namespace) -> int:
    """Run ``vllm-pool embed``; problems with the files or the inputs exit 1 with one line."""
    from vllm_pool import LLM, embed_job

    def load() -> object:
        try:
            return LLM.from_engine_args(EngineArgs.from_cli_args(args))
        except Exception as exc:  # a corrupt weights file is a SafetensorError...: one line too
            raise embed_job.JobError(load_error(args.model, exc)) from exc

    try:
        with sigterm_exits():
            return embed_job.run(args, load)
    except embed_job.JobError as exc:
        print(f"vllm-pool embed: {exc}", file=sys.stderr)
        return 1


def load_error(model: str, exc: Exception) -> str:
    """The one-line message of a model that failed to load (the traceback is logged at debug
    level); errors other than ``ValueError`` / ``TypeError`` / ``OSError`` name their type."""
    logger.debug("loading %r failed", model, exc_info=exc)
    expected = isinstance(exc, (ValueError, TypeError, OSError))
    return f"cannot load {model!r}: " + ("" if expected else f"{type(exc).__name__}: ") + str(exc)


@contextmanager
def sigterm_exits() -> Iterator[None]:
    """SIGTERM raises ``SystemExit(143)`` inside the block, as Ctrl-C raises
    ``KeyboardInterrupt``, so a job stopped by ``kill`` removes its temporary output file
    (the previous handler is restored after; only the main thread can set one)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def llm_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`LLM` keyword arguments of parsed ``serve`` arguments (checked by EngineArgs)."""
    return EngineArgs.from_cli_args(args).llm_kwargs()


def api_key(args: argparse.Namespace, environ: dict[str, str] | None = None) -> str | None:
    """The API key from ``--api-key-file``, ``--api-key`` or ``$VLLM_POOL_API_KEY`` (in that order).

    Raises:
        ValueError: both flags given, or an unreadable or empty key file.
    """
    env = os.environ if environ is None else environ
    if args.api_key_file is not None and args.api_key is not None:
        raise ValueError("give --api-key or --api-key-file, not both")
    if args.api_key_file is not None:
        try:
            with open(args.api_key_file, encoding="utf-8") as f:
                key = f.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--api-key-file {args.api_key_file}: cannot read it ({exc})") from exc
        if not key:
            raise ValueError(f"--api-key-file {args.api_key_file}: the file is empty")
        if os.stat(args.api_key_file).st_mode & 0o077:
            logger.warning("%s is readable by other users (chmod 600 it)", args.api_key_file)
        return key
    if args.api_key is not None:
        logger.warning("--api-key is visible in the process list; prefer %s or --api-key-file", API_KEY_ENV)
        return args.api_key
    return env.get(API_KEY_ENV) or None


def server_config_kwargs(args: argparse.Namespace, key: str | None) -> dict[str, Any]:
    """The :class:`~vllm_pool.engine.server.ServerConfig` keyword arguments of ``serve`` arguments
    (limits not given on the command line keep ``ServerConfig``'s defaults)."""
    kwargs = {
        "served_model_names": args.served_model_name or [args.model],
        "api_key": key,
        "max_inputs": args.max_inputs,
        "max_request_tokens": args.max_request_tokens,
        "answer_half_closed": args.answer_half_closed,
    }
    for name in ("max_body_bytes", "max_input_chars", "body_timeout", "header_timeout", "batch_wait"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    return kwargs


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


SERVING_OPENMP = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "20000"}
"""OpenMP settings of ``vllm-pool serve`` (read by OpenMP once, when torch loads it).

Passive threads sleep when idle, so they never starve the event loop that parses HTTP. Left
at that, each of a forward pass's few hundred parallel regions wakes them from sleep (a
futex wake: 50-80 us, as long as a small GEMM; a one-text request took 12 ms instead of 5).
``GOMP_SPINCOUNT`` (GNU OpenMP, which torch's Linux wheels use) lets them spin that many
rounds first (about 0.2 ms), which bridges the gaps between one op and the next but not the
idle time between requests. GNU OpenMP spins only while its teams hold no more threads than
there are cores: the engine keeps its model's work in one team (``engine.model_thread``)."""


REEXEC_GUARD = "VLLM_POOL_OPENMP_REEXEC"
"""The process id that :func:`passive_openmp` re-runs (``os.execv`` keeps it), removed by the
re-run: the command re-runs once, and a value inherited by another process is ignored."""


def passive_openmp(argv: Sequence[str]) -> None:
    """Re-run this command with :data:`SERVING_OPENMP` unless a wait policy is set (an empty
    ``OMP_WAIT_POLICY=`` is unset, as OpenMP reads it, and is replaced).

    OpenMP reads its settings once, when torch loads it, so they cannot change in a running
    process: the command replaces itself (``os.execv``) with the variables set, and with
    :data:`REEXEC_GUARD`, so that it never re-runs twice.
    """
    if os.environ.pop(REEXEC_GUARD, None) == str(os.getpid()) or os.environ.get("OMP_WAIT_POLICY"):
        return
    for name, value in SERVING_OPENMP.items():
        if not os.environ.get(name):  # unset or empty: a user's value is kept
            os.environ[name] = value
    os.environ[REEXEC_GUARD] = str(os.getpid())
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


def serving_engine_args(args: argparse.Namespace) -> EngineArgs:
    """The engine options of ``vllm-pool serve``, as given: where ``packed`` is not set the
    engine's own default applies (``engine.packing.default_on``, the same rule as ``LLM``)."""
    return EngineArgs.from_cli_args(args)


def serve(args: argparse.Namespace) -> int:
    """Run ``vllm-pool serve``: the API key, then the socket of ``--host`` / ``--port`` (a port
    in use fails before the model loads), then the model; problems exit 1 with one line."""
    try:
        import uvicorn

        from vllm_pool.engine.server import ServerConfig, build_app
        from vllm_pool.engine.server.connections import uvicorn_options
    except ImportError as exc:
        print(
            f"vllm-pool serve needs the server extra: pip install 'vllm-pool[server]' ({exc})",
            file=sys.stderr,
        )
        return 1
    from vllm_pool import LLM

    try:
        key = api_key(args)
        sock = cli_args.bind_socket(args.host, args.port)
    except ValueError as exc:
        print(f"vllm-pool serve: {exc}", file=sys.stderr)
        return 1
    with sock:
        try:
            llm = LLM.from_engine_args(serving_engine_args(args))
        except Exception as exc:  # a corrupt weights file is a SafetensorError...: one line too
            print(f"vllm-pool serve: {load_error(args.model, exc)}", file=sys.stderr)
            return 1
        threads = cpu_threads(args.num_threads, llm.model_config.device.type)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
            logger.info("Using %d torch CPU threads", threads)
        config = ServerConfig(**server_config_kwargs(args, key))
        app = build_app(llm, config)
        freeze_startup_heap()
        sock.listen(2048)  # uvicorn's backlog: from the banner on, a connection waits to be served
        print(
            f"vllm-pool serving {llm.model_name} (tasks: {', '.join(llm.get_supported_tasks())}) "
            f"on {cli_args.url(args.host, sock)}" + (" with an API key" if key else ""),
            flush=True,
        )
        # uvicorn serves on the bound socket (fd=: it listens on a copy of the descriptor)
        uvicorn.run(app, fd=sock.fileno(), log_level=args.log_level, **uvicorn_options(config))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vllm-pool`` console script."""
    parser = build_parser()
    args = parser.parse_args(cli_args.normalize_flags(sys.argv[1:] if argv is None else argv))
    if args.command == "serve":
        cli_args.check_serve_order(parser, args)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        if argv is None:  # the console script (in-process callers keep their process)
            passive_openmp(sys.argv[1:])
        return serve(args)
    if args.command == "embed":
        return embed(args)
    return 2  # pragma: no cover  (argparse requires a command)


if __name__ == "__main__":
    sys.exit(main())
