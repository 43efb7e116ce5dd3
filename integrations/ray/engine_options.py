"""The one place where the Ray integration turns keyword arguments into an engine.

Engine options are the keyword arguments of ``vllm_pool.LLM`` (``dtype``, ``device``,
``max_num_seqs``, ``compile``...). They are checked on the driver, when a
:class:`~.predictor.PoolingPredictor` is built, so that a typo fails before any actor starts,
and the engine is loaded once per actor by :func:`load_engine`.
"""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Mapping
from typing import Any


def engine_option_names() -> tuple[str, ...]:
    """The keyword arguments ``vllm_pool.LLM`` accepts besides ``model``."""
    from vllm_pool import LLM

    params = inspect.signature(LLM).parameters
    return tuple(name for name in params if name != "model")


def check_engine_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate engine options against ``vllm_pool.LLM``'s signature.

    Args:
        options: keyword arguments for ``vllm_pool.LLM``.

    Returns:
        The options as a plain dict.

    Raises:
        TypeError: an option that ``vllm_pool.LLM`` does not take, or a value that cannot be
            sent to a Ray actor as JSON (engine options are plain values).
    """
    names = engine_option_names()
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise TypeError(f"unknown engine options {unknown}: vllm_pool.LLM takes {sorted(names)}")
    out = dict(options)
    for name, value in out.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"engine option {name}={value!r} is not a plain value (str, number, bool, None, "
                "list or dict): Ray actors load the engine from plain options"
            ) from exc
    return out


_engines: dict[str, Any] = {}
_lock = threading.Lock()


def load_engine(model: str, options: Mapping[str, Any]) -> Any:
    """``vllm_pool.LLM(model, **options)`` (options already checked), loaded once per process
    and configuration: a Ray actor loads it when it starts; predictors built in one process
    (e.g. several tasks of one model) share it."""
    from vllm_pool import LLM

    key = json.dumps([model, dict(options)], sort_keys=True)
    with _lock:
        if key not in _engines:
            _engines[key] = LLM(model, **dict(options))
        return _engines[key]
