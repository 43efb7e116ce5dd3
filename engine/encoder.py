"""Batched text encoding through the tokenizer's Rust backend.

A Hugging Face tokenizer's ``__call__`` builds a Python ``BatchEncoding`` (attention masks,
type ids, per-token conversions) that the engine does not use; on a GPU that work, not the
model, bounds throughput. :class:`FastEncoder` calls the backend ``tokenizers.Tokenizer``
directly (one parallel ``encode_batch`` without the GIL) and reads only the token ids.

It keeps its own copy of the backend, so it never changes the truncation or padding of the
tokenizer that callers share. A probe at construction compares it with the tokenizer's
own ``__call__`` on a few texts; where they differ (a tokenizer whose Python class adds
its own processing) or there is no Rust backend, :meth:`FastEncoder.available` is False
and the caller keeps ``__call__``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

logger = logging.getLogger(__name__)

_PROBE_TEXTS = (
    "Hello world!",
    "  Leading spaces, punctuation; numbers 12345 and a longer tail to cut off at the limit.",
    "Ünïcödé façade — naïve café, 東京",
    "a",
)


class FastEncoder:
    """Token ids of many texts at once, special tokens added, cut to a limit.

    Args:
        tokenizer: a Hugging Face tokenizer; only fast (Rust-backed) ones are used.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        fast = getattr(tokenizer, "is_fast", False)
        backend = getattr(tokenizer, "backend_tokenizer", None) if fast else None
        self._own: Any = None  # a copy of the backend, set to one limit at a time
        self._limit: int | None = None
        self._lock = threading.Lock()
        self.available = backend is not None and self._agrees(backend)

    def __call__(self, texts: list[str], limit: int) -> list[list[int]]:
        """The token ids of each text, as ``tokenizer(texts, truncation=True, max_length=limit)``."""
        with self._lock:  # one call at a time: the limit is the copy's state (it runs on every core)
            if limit != self._limit:
                side = getattr(self.tokenizer, "truncation_side", "right")
                self._own.enable_truncation(limit, stride=0, strategy="longest_first", direction=side)
                self._limit = limit
            encode = getattr(self._own, "encode_batch_fast", self._own.encode_batch)  # tokenizers >= 0.21
            encodings = encode(texts, add_special_tokens=True)
        return [e.ids for e in encodings]

    def _agrees(self, backend: Any) -> bool:
        texts = list(_PROBE_TEXTS)
        try:
            from tokenizers import Tokenizer

            self._own = Tokenizer.from_str(backend.to_str())
            self._own.no_padding()
            for limit in (8, 512):
                want = self.tokenizer(texts, truncation=True, max_length=limit, add_special_tokens=True)
                if self(texts, limit) != [list(ids) for ids in want["input_ids"]]:
                    logger.info(
                        "The Rust tokenizer backend differs from %s; using its __call__",
                        type(self.tokenizer).__name__,
                    )
                    return False
        except Exception as e:  # an unusual backend: keep the tokenizer's own call
            logger.info("The Rust tokenizer backend is not usable (%s: %s)", type(e).__name__, e)
            return False
        return True
