"""One progress bar per call, however many engine calls the call makes.

An integration call (``embed_documents`` on 2,000 texts, a ColBERT ``add_texts``) runs the
engine batch by batch; each engine call would open its own bar. :class:`CallProgress` opens
one bar for the whole call and hands each engine call a view of it through ``use_tqdm``
(the engine accepts a callable there, as vLLM does), so the bar moves as the engine
finishes each forward pass.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any


class _Part:
    """What the engine gets from :meth:`CallProgress.use_tqdm`: updates go to the shared bar,
    closing it does nothing."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def close(self) -> None:
        pass

    def __enter__(self) -> _Part:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        pass


class CallProgress:
    """One tqdm bar over ``total`` items (off when ``enabled`` is false).

    Example:
        >>> with CallProgress(3, "Embedding", enabled=False) as progress:
        ...     progress.use_tqdm
        False
    """

    def __init__(self, total: int, desc: str, enabled: bool, unit: str = "text") -> None:
        self.enabled = enabled
        self.bar: Any = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit)

    @property
    def use_tqdm(self) -> Any:
        """The engine's ``use_tqdm`` argument: ``False``, or a maker of views of this bar."""
        if self.bar is None:
            return False
        bar = self.bar
        return lambda **_: _Part(bar)

    def update(self, n: int) -> None:
        """Advance by ``n`` items (for work that does not go through the engine's bar)."""
        if self.bar is not None:
            self.bar.update(n)

    def __enter__(self) -> CallProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.bar is not None:
            self.bar.close()
