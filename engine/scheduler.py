"""Token-budget batching: requests sorted by length, grouped so padding stays small.

A padded model pays ``max_len x n`` tokens for a batch of ``n`` requests (TEI's rule), so
the budget counts padding. Sorting by token count (not characters) keeps each batch's
lengths close.
"""

from __future__ import annotations

from vllm_pool.engine.types import Batch, Request


def schedule(requests: list[Request], max_num_batched_tokens: int, max_num_seqs: int) -> list[Batch]:
    """Group ``requests`` into batches, longest first.

    Args:
        requests: tokenized requests, in any order.
        max_num_batched_tokens: budget of padded tokens per batch (``max_len x n``). A
            request longer than the budget runs alone.
        max_num_seqs: cap on requests per batch.

    Returns:
        Batches whose padded size fits the budget, longest requests first.
    """
    if max_num_batched_tokens < 1 or max_num_seqs < 1:
        raise ValueError("max_num_batched_tokens and max_num_seqs must be positive")
    ordered = sorted(requests, key=lambda r: (-r.num_tokens, r.index))
    batches: list[Batch] = []
    current = Batch()
    for req in ordered:
        n = len(current.requests)
        # Longest first: the batch's max_len is its first request's length.
        max_len = current.requests[0].num_tokens if n else req.num_tokens
        if n and (n + 1 > max_num_seqs or max_len * (n + 1) > max_num_batched_tokens):
            batches.append(current)
            current = Batch()
        current.requests.append(req)
    if current.requests:
        batches.append(current)
    return batches
