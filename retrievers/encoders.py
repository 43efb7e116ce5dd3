"""The two small interfaces the indexes need from a model, and adapters for the engine.

Indexes never import the engine: they take a :class:`TextEmbedder` (one vector per text)
or a :class:`TokenEncoder` (one vector per token). :class:`EngineTextEmbedder` and
:class:`EngineTokenEncoder` adapt a ``vllm_pool.LLM``; tests use fakes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class TextEmbedder(Protocol):
    """Something that embeds texts into one vector each."""

    model_name: str | None

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Return ``float32 [len(texts), D]`` vectors."""
        ...


@runtime_checkable
class TokenEncoder(Protocol):
    """Something that turns token ids into one L2-normalized vector per token."""

    model_name: str | None
    tokenizer: Any

    def encode_token_ids(self, token_ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Return one ``float32 [L_i, D]`` array per input (``L_i = len(token_ids[i])``)."""
        ...


class EngineTextEmbedder:
    """A :class:`TextEmbedder` over ``vllm_pool.LLM.embed``.

    Args:
        llm: a loaded ``vllm_pool.LLM`` (anything with ``embed`` and ``model_name``).
        use_tqdm: show the engine's progress bar.
    """

    def __init__(self, llm: Any, use_tqdm: bool = False) -> None:
        self.llm = llm
        self.use_tqdm = use_tqdm
        self.model_name = getattr(llm, "model_name", None)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        outs = self.llm.embed(list(texts), use_tqdm=self.use_tqdm)
        if outs and all(hasattr(o.outputs, "data") for o in outs):  # tensors: no Python lists
            return np.stack([np.asarray(o.outputs.data, dtype=np.float32) for o in outs])
        return np.asarray([o.outputs.embedding for o in outs], dtype=np.float32).reshape(len(outs), -1)


class EngineTokenEncoder:
    """A :class:`TokenEncoder` over ``vllm_pool.LLM.encode(..., pooling_task="token_embed")``.

    Args:
        llm: a loaded ``vllm_pool.LLM`` (``encode``, ``get_tokenizer``, ``model_name``).
        use_tqdm: show the engine's progress bar.
    """

    def __init__(self, llm: Any, use_tqdm: bool = False) -> None:
        self.llm = llm
        self.use_tqdm = use_tqdm
        self.model_name = getattr(llm, "model_name", None)
        self.tokenizer = llm.get_tokenizer()

    def encode_token_ids(self, token_ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        prompts = [{"prompt_token_ids": list(ids)} for ids in token_ids]
        outs = self.llm.encode(prompts, pooling_task="token_embed", use_tqdm=self.use_tqdm)
        return [o.outputs.data.detach().float().cpu().numpy() for o in outs]


def encode_in_batches(
    texts: Sequence[str], encode: Callable[[list[str]], Any], batch_size: int, desc: str
) -> list[Any]:
    """``encode`` each batch of ``texts`` with a progress bar; one result per batch.

    Raises:
        ValueError: ``texts`` is a single string or empty.
    """
    from tqdm.auto import tqdm

    if isinstance(texts, str) or len(texts) == 0:
        raise ValueError("texts must be a non-empty list of strings")
    starts = range(0, len(texts), batch_size)
    return [encode(list(texts[i : i + batch_size])) for i in tqdm(starts, desc=desc, unit="batch")]
