"""Command-line helpers of ``vllm-pool`` (:mod:`vllm_pool.cli`): vLLM's underscore flags,
``--port`` values, the ``serve MODEL`` / ``--served-model-name`` order, and the listening
socket of ``--host`` / ``--port``, bound before the model loads."""

from __future__ import annotations

import argparse
import errno
import socket
from collections.abc import Sequence

MAX_PORT = 65535


def normalize_flags(argv: Sequence[str]) -> list[str]:
    """``argv`` with vLLM's underscore spellings of flag names (``--max_model_len 64``,
    ``--max_num_seqs=8``) rewritten to the dashed ones, as vLLM's ``FlexibleArgumentParser``
    does; values (``--id-field my_id``, ``--x=a_b``) and everything after ``--`` are kept."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + list(argv[i:])
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            arg = name.replace("_", "-") + eq + value
        out.append(arg)
    return out


def port_number(text: str) -> int:
    """The argparse type of ``--port``: an integer from 0 (a free port) to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 (a free port) to {MAX_PORT}, got {text}")
    return port


class _DefaultModel(str):
    """The default of ``serve``'s MODEL, so that a MODEL that was not given can be told apart
    from the same name given on the command line."""


def mark_default_model(parser: argparse.ArgumentParser) -> None:
    """Make ``parser``'s default MODEL recognisable (:func:`check_serve_order`)."""
    parser.set_defaults(model=_DefaultModel(parser.get_default("model")))


def check_serve_order(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse ``serve --served-model-name NAME MODEL``: ``--served-model-name`` takes every
    word after it, so MODEL would become a second name and the default model be served.

    Raises:
        SystemExit: (``parser.error``, exit 2) no MODEL and several served names.
    """
    names = getattr(args, "served_model_name", None) or []
    if isinstance(args.model, _DefaultModel) and len(names) > 1:
        parser.error(
            f"--served-model-name took {names} and no MODEL was given: give MODEL before "
            f"--served-model-name (vllm-pool serve {names[-1]} --served-model-name {' '.join(names[:-1])})"
        )
    args.model = str(args.model)


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (0: a free port), not yet listening (the
    command listens once the model is loaded), for uvicorn to serve on: a port in use is
    found before the model loads.

    An IPv6 address (``::``) gives an IPv6 socket, any other host an IPv4 one (as uvicorn's
    own ``bind_socket``). ``TCP_NODELAY`` is set on it: accepted connections inherit it on
    Linux, as asyncio sets it on connections of its own sockets.

    Raises:
        ValueError: the host does not resolve, the port is in use, or it cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        info = socket.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ValueError(f"--host {host!r}: cannot resolve it ({exc.strerror})") from None
    af, kind, proto, _, address = info[0]
    sock = socket.socket(af, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ValueError(f"--port {port}: {host}:{port} is already in use") from None
        raise ValueError(f"cannot listen on --host {host} --port {port}: {exc.strerror or exc}") from None
    return sock


def url(host: str, sock: socket.socket) -> str:
    """The ``http://host:port`` address of ``sock`` (its bound port: the free one for ``--port 0``)."""
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
