"""Batched text encoding through the tokenizer's Rust backend.

A Hugging Face tokenizer's ``__call__`` builds a Python ``BatchEncoding`` (attention masks,
type ids, per-token conversions) that the engine does not use; on a GPU that work, not the
model, bounds throughput. :class:`FastEncoder` calls the backend ``tokenizers.Tokenizer``
directly (one parallel ``encode_batch`` without the GIL) and reads only the token ids.

It keeps its own copies of the backend, one per thread that encodes (the truncation limit
is a backend's state), so it never changes the truncation or padding of the tokenizer that
callers share, and two threads encode at once without a lock (the server tokenizes a
one-text request on its event loop while a large one is tokenized on the engine's
tokenizer thread). A probe at construction compares it with the tokenizer's
own ``__call__`` on a few texts; where they differ (a tokenizer whose Python class adds
its own processing) or there is no Rust backend, ``available`` is False and the caller
keeps ``__call__``; ``pairs_available`` says the same of text pairs (cross-encoders).
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
    """Token ids of many texts (or text pairs) at once, special tokens added, cut to a limit.

    Args:
        tokenizer: a Hugging Face tokenizer; only fast (Rust-backed) ones are used.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        fast = getattr(tokenizer, "is_fast", False)
        backend = getattr(tokenizer, "backend_tokenizer", None) if fast else None
        self._json = ""  # the backend, serialized: each thread builds its own copy from it
        self._local = threading.local()  # .own (the copy), .truncation (its limit, strategy, side)
        self.pairs_available = False  # text pairs too (set by the probe)
        self.available = backend is not None and self._agrees(backend)

    def __call__(self, texts: list[str], limit: int) -> list[list[int]]:
        """The token ids of each text, as ``tokenizer(texts, truncation=True, max_length=limit)``."""
        return [e.ids for e in self._encode(texts, limit, "longest_first")]

    def pairs(self, pairs: list[tuple[str, str]], limit: int) -> list[tuple[list[int], list[int]]] | None:
        """Ids and segment ids of each pair, as ``tokenizer(a, b, truncation="only_second",
        max_length=limit)``; ``None`` when a first text alone is over the limit (the caller
        then cuts those pairs one by one)."""
        try:
            encodings = self._encode(pairs, limit, "only_second")
        except Exception:  # the backend refuses the whole batch when a first text is too long
            return None
        return [(e.ids, e.type_ids) for e in encodings]

    def _encode(self, inputs: list[Any], limit: int, strategy: str) -> list[Any]:
        local = self._local
        own = getattr(local, "own", None)
        if own is None:  # this thread's copy (the limit is a copy's state)
            from tokenizers import Tokenizer

            own = local.own = Tokenizer.from_str(self._json)
            own.no_padding()
            if hasattr(own, "encode_special_tokens"):  # not part of the serialized backend
                own.encode_special_tokens = bool(getattr(self.tokenizer, "split_special_tokens", False))
            local.truncation = None
        side = getattr(self.tokenizer, "truncation_side", "right")  # read live, as token prompts do
        if (limit, strategy, side) != local.truncation:
            own.enable_truncation(limit, stride=0, strategy=strategy, direction=side)
            local.truncation = (limit, strategy, side)
        if len(inputs) == 1 and isinstance(inputs[0], str):  # no hand-off to the backend's thread pool
            return [own.encode(inputs[0], add_special_tokens=True)]
        encode = getattr(own, "encode_batch_fast", own.encode_batch)  # tokenizers >= 0.21
        return encode(inputs, add_special_tokens=True)

    def _agrees(self, backend: Any) -> bool:
        """Copy the backend, and check it against ``__call__`` on single texts, then pairs."""
        specials = [
            t
            for t in (getattr(self.tokenizer, "special_tokens_map", None) or {}).values()
            if isinstance(t, str)
        ]
        texts = [*_PROBE_TEXTS, f"x {' '.join(specials)} y"]  # special tokens typed in a text
        pairs = [(texts[3], t) for t in texts]  # a short first text: only the second is cut
        try:
            self._json = backend.to_str()
            for limit in (8, 512):
                want = self.tokenizer(texts, truncation=True, max_length=limit, add_special_tokens=True)
                want_ids = [list(ids) for ids in want["input_ids"]]
                if self(texts, limit) != want_ids or [self([t], limit)[0] for t in texts] != want_ids:
                    logger.info("The Rust tokenizer backend differs from %s", type(self.tokenizer).__name__)
                    return False
        except Exception as e:  # an unusual backend: keep the tokenizer's own call
            logger.info("The Rust tokenizer backend is not usable (%s: %s)", type(e).__name__, e)
            return False
        try:
            for limit in (8, 512):
                want_pairs = [
                    self.tokenizer(a, b, truncation="only_second", max_length=limit) for a, b in pairs
                ]
                got = self.pairs(pairs, limit)
                self.pairs_available = got is not None and all(
                    ids == list(w["input_ids"]) and types == list(w.get("token_type_ids") or types)
                    for (ids, types), w in zip(got, want_pairs)
                )
                if not self.pairs_available:
                    break
        except Exception:  # a tokenizer without pairs
            self.pairs_available = False
        return True
