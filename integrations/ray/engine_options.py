"""The one place where the Ray integration turns keyword arguments into an engine.

Engine options are the fields of :class:`vllm_pool.EngineArgs` (``dtype``, ``device``,
``max_num_seqs``, ``compile``...), the one declaration of every engine option. They are
checked on the driver, when a :class:`~.predictor.PoolingPredictor` is configured, so that a
typo or a bad value fails before any actor starts, and the engine is loaded once per actor
by :func:`load_engine` from the same ``EngineArgs``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any


def engine_option_names() -> tuple[str, ...]:
    """The engine options besides ``model``."""
    from vllm_pool import EngineArgs

    return tuple(name for name in EngineArgs.names() if name != "model")


def check_engine_options(options: Mapping[str, Any], model: str | None = None) -> dict[str, Any]:
    """Validate engine options (names, then values through ``EngineArgs``).

    Args:
        options: keyword arguments for ``vllm_pool.LLM``.
        model: the model they go with (default: the default model).

    Returns:
        The options as a plain dict.

    Raises:
        TypeError: an option that ``vllm_pool.EngineArgs`` does not have, a value of the wrong
            type, or a value that cannot be sent to a Ray actor as JSON (engine options are
            plain values).
        ValueError: a bad value (``EngineArgs``' own checks).
    """
    from vllm_pool import DEFAULT_MODEL, EngineArgs

    names = engine_option_names()
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise TypeError(f"unknown engine options {unknown}: vllm_pool.EngineArgs has {sorted(names)}")
    out = dict(options)
    for name, value in out.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"engine option {name}={value!r} is not a plain value (str, number, bool, None, "
                "list or dict): Ray actors load the engine from plain options"
            ) from exc
    EngineArgs(model=model or DEFAULT_MODEL, **out)  # value checks, without loading anything
    return out


_engines: dict[str, Any] = {}
_lock = threading.Lock()


def load_engine(model: str, options: Mapping[str, Any]) -> Any:
    """``LLM.from_engine_args(EngineArgs(model, **options))``, loaded once per process and
    configuration: a Ray actor loads it when it starts; predictors built in one process
    (e.g. several tasks of one model) share it."""
    from vllm_pool import LLM, EngineArgs

    key = json.dumps([model, dict(options)], sort_keys=True)
    with _lock:
        if key not in _engines:
            _engines[key] = LLM.from_engine_args(EngineArgs(model=model, **dict(options)))
        return _engines[key]
