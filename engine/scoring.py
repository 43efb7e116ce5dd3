"""`LLM.score` input shapes and the bi-encoder fallback (cosine of embeddings)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from vllm_pool.engine.inputs import check_unicode
from vllm_pool.engine.outputs import EmbeddingRequestOutput

PAIR_SHAPE_ERROR = "Input lengths must be either 1:1, 1:N or N:N"


def _as_list(data: object, name: str) -> list[str]:
    if isinstance(data, str):
        if not data:
            raise ValueError(f"{name} is an empty string")
        check_unicode(data, name)
        return [data]
    if isinstance(data, Sequence) and not isinstance(data, (bytes, bytearray)):
        items = list(data)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise TypeError(f"{name}[{i}] must be a string, got {type(item).__name__}")
            if not item:
                raise ValueError(f"{name}[{i}] is an empty string")
            check_unicode(item, f"{name}[{i}]")
        return items
    raise TypeError(f"{name} must be a string or a list of strings, got {type(data).__name__}")


def pair_up(data_1: object, data_2: object) -> tuple[list[str], list[str]]:
    """Expand 1:1, 1:N and N:N inputs into two equal-length lists.

    >>> pair_up("q", ["a", "b"])
    (['q', 'q'], ['a', 'b'])
    """
    a, b = _as_list(data_1, "data_1"), _as_list(data_2, "data_2")
    if len(a) == 1 and len(b) >= 1:
        a = a * len(b)
    elif len(a) != len(b) or not a:
        raise ValueError(PAIR_SHAPE_ERROR)
    return a, b


def cosine_pair_scores(
    texts_1: list[str], texts_2: list[str], unique: list[str], embeddings: list[EmbeddingRequestOutput]
) -> list[tuple[list[int], float]]:
    """The bi-encoder fallback of ``score``: cosine of the two texts' embeddings.

    Args:
        texts_1, texts_2: the paired texts.
        unique: the distinct texts, in the order they were embedded.
        embeddings: the embedding outputs of ``unique``.

    Returns:
        One ``(both texts' token ids, score)`` per pair.
    """
    by_text = dict(zip(unique, embeddings))
    e1 = torch.tensor([by_text[t].outputs.embedding for t in texts_1])  # [pairs, dim]
    e2 = torch.tensor([by_text[t].outputs.embedding for t in texts_2])  # [pairs, dim]
    scores = torch.nn.functional.cosine_similarity(e1, e2, dim=-1).tolist()
    return [
        (by_text[a].prompt_token_ids + by_text[b].prompt_token_ids, s)
        for a, b, s in zip(texts_1, texts_2, scores)
    ]
