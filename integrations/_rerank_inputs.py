"""What the rerankers of both frameworks check: the texts they are given, ``top_n``, and
whether their model is a cross-encoder at all."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

_warned: set[str] = set()


def texts_of(items: Sequence[Any], what: str = "documents") -> list[str]:
    """The text of each item: a string, a LangChain ``Document`` (``page_content``) or a
    LlamaIndex node / ``NodeWithScore`` (its embedding view, as the postprocessors rank).

    Raises:
        TypeError: a single string, or an item of another type (named by its position).
    """
    if isinstance(items, str):
        raise TypeError(f"{what} must be a list of texts or documents, not a single string")
    out: list[str] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            out.append(item)
        elif isinstance(getattr(item, "page_content", None), str):
            out.append(item.page_content)
        elif callable(getattr(item, "get_content", None)):
            from llama_index.core.schema import MetadataMode

            out.append(item.get_content(metadata_mode=MetadataMode.EMBED))
        else:
            raise TypeError(
                f"{what}[{i}] must be a string, a LangChain Document or a LlamaIndex node, "
                f"got {type(item).__name__}"
            )
    return out


def check_top_n(top_n: Any) -> Any:
    """``top_n`` as given, when it is ``None`` (every document, reordered) or an int >= 1.

    Raises:
        ValueError: ``0``, a negative number or a non-integer.
    """
    if top_n is None:
        return None
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise ValueError(
            f"top_n must be a positive integer or None (all documents, reordered), got {top_n!r}"
        )
    return top_n


def warn_if_bi_encoder(llm: Any, owner: str) -> None:
    """Warn once per model when a cross-encoder reranker class runs a bi-encoder.

    Such a model has no score head: the reranker compares the query and document
    embeddings, which mostly re-sorts the dense retrieval order it was meant to correct.
    """
    tasks = llm.get_supported_tasks()
    name = str(getattr(llm, "model_name", "the model"))
    if "score" in tasks or "embed" not in tasks or name in _warned:
        return
    _warned.add(name)
    message = (
        f"{owner}: {name} is a bi-encoder (no cross-encoder score head), so reranking scores are the "
        "similarity of the query and document embeddings: with a dense first stage on the same "
        "model the order barely changes. Use a cross-encoder, e.g. model='BAAI/bge-reranker-v2-m3'."
    )
    warnings.warn(message, UserWarning, stacklevel=3)
