"""Request and response bodies of the HTTP API, with vLLM's (and OpenAI's) field names."""

from __future__ import annotations

import random
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

# A prompt is a string or token ids; a request holds one prompt or a list of them.
Input = StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
EncodingFormat = Literal["float", "base64"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = Field(
        None, description="Served model name; checked when given (unset or empty: the served model)."
    )


class EmbeddingRequest(_Request):
    """``POST /v1/embeddings`` (OpenAI's Embeddings API, plus vLLM's extras)."""

    input: Input = Field(description="A string, a list of strings, token ids or a list of token id lists.")
    encoding_format: EncodingFormat = "float"
    dimensions: StrictInt | None = Field(None, description="Matryoshka output size.")
    truncate_prompt_tokens: StrictInt | None = Field(None, description="Cut prompts to this many tokens.")
    normalize: StrictBool | None = None
    user: StrictStr | None = None
    add_special_tokens: StrictBool = Field(
        True, description="Add the tokenizer's special tokens (e.g. [CLS] / BOS) to text inputs."
    )


class PoolingRequest(_Request):
    """``POST /pooling``: raw pooled data for any task the model supports (``LLM.encode``).

    An IO processor plugin request (vLLM's ``IOProcessorRequest``) sends ``data`` (the
    plugin's input) instead of ``input``, with ``task`` ``"plugin"`` or unset.
    """

    input: Input | None = None
    data: Any = Field(None, description="The IO processor plugin's input (the 'plugin' task).")
    task: StrictStr | None = Field(
        None,
        description="Pooling task; default as vLLM: token_embed, else token_classify, else plugin.",
    )
    encoding_format: EncodingFormat = "float"
    dimensions: StrictInt | None = None
    normalize: StrictBool | None = None
    use_activation: StrictBool | None = None
    truncate_prompt_tokens: StrictInt | None = None
    add_special_tokens: StrictBool = Field(
        True, description="Add the tokenizer's special tokens (e.g. [CLS] / BOS) to text inputs."
    )


class ClassificationRequest(_Request):
    """``POST /classify`` (``LLM.classify``)."""

    input: Input
    use_activation: StrictBool | None = None
    truncate_prompt_tokens: StrictInt | None = None
    add_special_tokens: StrictBool = Field(
        True, description="Add the tokenizer's special tokens (e.g. [CLS] / BOS) to text inputs."
    )


class ScoreRequest(_Request):
    """``POST /score``: pairs 1:1, 1:N or N:N (``LLM.score``).

    The first side is ``text_1``, ``data_1`` or ``queries``; the second ``text_2``,
    ``data_2``, ``documents`` or ``items`` (the spellings of vLLM's versions).
    """

    text_1: StrictStr | list[StrictStr] | None = None
    text_2: StrictStr | list[StrictStr] | None = None
    data_1: StrictStr | list[StrictStr] | None = None
    data_2: StrictStr | list[StrictStr] | None = None
    queries: StrictStr | list[StrictStr] | None = None
    documents: StrictStr | list[StrictStr] | None = None
    items: StrictStr | list[StrictStr] | None = None

    def side(self, first: bool) -> tuple[str, Any]:
        """The (field name, value) of the first or second side: the first field given."""
        names = ("text_1", "data_1", "queries") if first else ("text_2", "data_2", "documents", "items")
        given = [(n, getattr(self, n)) for n in names if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"Give only one of {[n for n, _ in given]}")
        return given[0] if given else (names[0], None)

    use_activation: StrictBool | None = None
    truncate_prompt_tokens: StrictInt | None = None


class RerankRequest(_Request):
    """``POST /rerank``, ``/v1/rerank`` and ``/v2/rerank`` (Jina / Cohere shape)."""

    query: StrictStr
    documents: list[StrictStr]
    top_n: StrictInt = Field(0, description="Results to return; 0 or less: all (as vLLM).")
    return_documents: StrictBool = True
    use_activation: StrictBool | None = None
    truncate_prompt_tokens: StrictInt | None = None


class TokenizeRequest(_Request):
    """``POST /tokenize``."""

    prompt: StrictStr
    add_special_tokens: StrictBool = True
    return_token_strs: StrictBool = False


class DetokenizeRequest(_Request):
    """``POST /detokenize``."""

    tokens: list[StrictInt]


# ---------------------------------------------------------------------- responses
def usage(prompt_tokens: int) -> dict[str, Any]:
    """vLLM's ``UsageInfo`` of a pooling request (no completion tokens)."""
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens,
        "completion_tokens": 0,
        "prompt_tokens_details": None,
    }


def request_id(kind: str, header: str | None = None) -> str:
    """vLLM's response id: ``<kind>-<X-Request-Id header, else 32 random hex digits>`` (as
    vLLM's ``uuid4().hex``; drawn from ``random``, as an id needs no system entropy and a
    ``getrandom`` call costs tens of microseconds on some virtual machines)."""
    return f"{kind}-{header or f'{random.getrandbits(128):032x}'}"


def envelope(
    kind: str, model: str, data: list[dict[str, Any]], prompt_tokens: int, header_id: str | None = None
) -> dict[str, Any]:
    """The list response shared by embeddings, pooling, classify and score (ids ``embd-``,
    ``pool-``, ``classify-``, ``score-`` as vLLM's)."""
    return {
        "id": request_id(kind, header_id),
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": data,
        "usage": usage(prompt_tokens),
    }


def rerank_response(
    model: str, results: list[dict[str, Any]], total_tokens: int, header_id: str | None = None
) -> dict[str, Any]:
    """vLLM's rerank response; ``usage`` has ``prompt_tokens`` and ``total_tokens``."""
    return {
        "id": request_id("rerank", header_id),
        "model": model,
        "usage": {"prompt_tokens": total_tokens, "total_tokens": total_tokens},
        "results": results,
    }


def plugin_response(data: Any, header_id: str | None = None) -> dict[str, Any]:
    """vLLM's ``IOProcessorResponse``: the plugin's output under ``data``."""
    return {"request_id": request_id("pool", header_id), "created_at": int(time.time()), "data": data}
