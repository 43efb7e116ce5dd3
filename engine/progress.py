"""The prompt progress bar of the offline calls (``use_tqdm``), as vLLM's."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from tqdm.auto import tqdm


@contextlib.contextmanager
def progress_bar(total: int, use_tqdm: bool | Callable[..., Any]) -> Iterator[Any]:
    """A prompt progress bar (``None`` when off), advanced from the engine's threads.

    ``use_tqdm`` may be a callable making the bar (as vLLM's ``use_tqdm``, e.g.
    ``functools.partial(tqdm, leave=False)``): it gets ``total``, ``desc`` and ``unit``.
    """
    if not use_tqdm:
        yield None
        return
    make = use_tqdm if callable(use_tqdm) else tqdm
    with make(total=total, desc="Processed prompts", unit="prompt") as bar:
        yield bar
