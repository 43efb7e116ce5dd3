"""The two small interfaces the indexes need from a model, and adapters for the engine.

Indexes never import the engine: they take a :class:`TextEmbedder` (one vector per text)
or a :class:`TokenEncoder` (one vector per token). :class:`EngineTextEmbedder` and
:class:`EngineTokenEncoder` adapt a ``vllm_pool.LLM``; tests use fakes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .positions import caller_positions


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
        """Return one ``float32 [L_i, D]`` array per input (``L_i = len(token_ids[i])``, or
        ``L_i - 1`` for a model without a vector for the first token).

        An encoder may also take ``attention_masks`` (one 0 / 1 list per input: positions
        the model must not attend to, which still get a vector); ColBERT query expansion
        with unattended ``[MASK]`` tokens needs it. It may also have ``colbert_settings``
        (a checkpoint's default ``ColBERTConfig`` fields), ``max_length`` (its token limit)
        and ``tokenizer_lock`` (held while the tokenizer is called, when others share it).
        """
        ...


class EngineTextEmbedder:
    """A :class:`TextEmbedder` over ``vllm_pool.LLM.embed``.

    Args:
        llm: a loaded ``vllm_pool.LLM`` (anything with ``embed`` and ``model_name``).
        use_tqdm: show the engine's progress bar.
        truncate: cut texts longer than the model's limit to it (``truncate_prompt_tokens=-1``,
            as Sentence Transformers does); ``False``: such a text is the engine's error.
    """

    def __init__(self, llm: Any, use_tqdm: bool = False, truncate: bool = True) -> None:
        self.llm = llm
        self.use_tqdm = use_tqdm
        self.truncate = truncate
        self.model_name = getattr(llm, "model_name", None)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        cut = {"truncate_prompt_tokens": -1} if self.truncate else {}
        outs = self.llm.embed(list(texts), use_tqdm=self.use_tqdm, **cut)
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
        self.tokenizer_lock = getattr(getattr(llm, "input_processor", None), "lock", None)
        """The engine's lock of the tokenizer (:class:`~.colbert.ColBERTEncoder` tokenizes under it)."""
        model_config = getattr(llm, "model_config", None)
        checkpoint = getattr(model_config, "colbert", None)
        self.colbert_settings: dict[str, Any] | None = dict(checkpoint.settings) if checkpoint else None
        """The ColBERT checkpoint's encoder settings, ``None`` for a plain embedding model."""
        limit = getattr(model_config, "max_model_len", None)
        self.max_length: int | None = int(limit) if isinstance(limit, int) else None

    def encode_token_ids(
        self, token_ids: Sequence[Sequence[int]], attention_masks: Sequence[Sequence[int]] | None = None
    ) -> list[np.ndarray]:
        masks = attention_masks if attention_masks is not None else [None] * len(token_ids)
        prompts = [
            {"prompt_token_ids": list(ids), **({"attention_mask": list(m)} if m is not None else {})}
            for ids, m in zip(token_ids, masks, strict=True)
        ]
        outs = self.llm.encode(prompts, pooling_task="token_embed", use_tqdm=self.use_tqdm)
        return [o.outputs.data.detach().float().cpu().numpy() for o in outs]


def encode_in_batches(
    texts: Sequence[str], encode: Callable[[list[str]], Any], batch_size: int, desc: str
) -> list[Any]:
    """``encode`` each batch of ``texts``, with a progress bar when there are several; one
    result per batch.

    An error from ``encode`` names the caller's position (``texts[280]``, not the batch's
    ``prompts[24]``).

    Raises:
        TypeError: ``texts`` is a single string (as ``embed_documents`` raises).
        ValueError: ``texts`` is empty.
    """
    from tqdm.auto import tqdm

    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not a single string")
    if len(texts) == 0:
        raise ValueError("texts must be a non-empty list of strings")
    out = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=len(starts) < 2):
        with caller_positions(start, "texts"):  # texts[280], not prompts[24] of a batch
            out.append(encode(list(texts[start : start + batch_size])))
    return out
