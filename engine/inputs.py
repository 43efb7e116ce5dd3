"""Prompts in, tokenized :class:`Request` objects out.

Accepts a string, a ``{"prompt_token_ids": [...]}`` dict (vLLM's ``TokensPrompt``,
optionally with an ``"attention_mask"`` of 0 / 1 per token for the token tasks), a
``{"prompt": "..."}`` dict, or a list of those. Anything else is a ``TypeError`` that
names the position. A text dict may carry an ``"instruction"`` (a Sentence Transformers
prompt such as ``"query: "``): the text run is ``instruction + prompt``, and the request
records how many tokens the instruction takes, for models whose ST Pooling excludes them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any

from vllm_pool.engine.encoder import FastEncoder
from vllm_pool.engine.lengths import (
    PromptTooLongError,
    TruncationTooLargeError,
    check_cut,
    num_special_tokens,
)
from vllm_pool.engine.params import PoolingParams
from vllm_pool.engine.types import Request

PromptType = str | dict[str, Any]

NO_LIMIT = 1 << 30
"""The tokenizers' ``max_length`` when a prompt is not cut (its length is checked afterwards)."""


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_id_list(x: object) -> bool:
    return isinstance(x, (list, tuple)) and bool(x) and _is_int(x[0])


def normalize_prompts(prompts: object) -> list[PromptType]:
    """Return ``prompts`` as a list, checking every item's type.

    As vLLM's prompt types, a list of token ids is one prompt (``[101, 7592, 102]``) and a
    list of such lists is one prompt each; both become ``{"prompt_token_ids": [...]}``.
    """
    if isinstance(prompts, (str, dict)):
        items: list[Any] = [prompts]
    elif _is_id_list(prompts):
        items = [{"prompt_token_ids": list(prompts)}]  # type: ignore[arg-type]
    elif isinstance(prompts, Sequence) and not isinstance(prompts, (bytes, bytearray)):
        items = [{"prompt_token_ids": list(p)} if _is_id_list(p) else p for p in prompts]
    else:
        raise TypeError(
            "prompts must be a string, a list of strings, or {'prompt_token_ids': [...]} dicts, "
            f"got {type(prompts).__name__}"
        )
    for i, item in enumerate(items):
        if isinstance(item, str):  # "" is fine where the tokenizer adds tokens ([CLS] [SEP])
            check_unicode(item, f"prompts[{i}]")
            continue
        if isinstance(item, dict):
            _check_dict_prompt(item, i)
            continue
        raise TypeError(
            f"prompts[{i}] must be a string, a list of token ids or a {{'prompt_token_ids': [...]}} "
            f"dict, got {type(item).__name__}"
        )
    return items


def check_unicode(text: str, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` if ``text`` holds a lone surrogate (not valid
    Unicode; the tokenizer's own error would be an unrelated ``TextEncodeInput`` message)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{where} is not valid Unicode: a lone surrogate {text[exc.start]!r} at character {exc.start}"
        ) from None


def _check_dict_prompt(item: dict[str, Any], i: int) -> None:
    if "prompt_token_ids" in item:
        ids = item["prompt_token_ids"]
        if not isinstance(ids, Sequence) or isinstance(ids, (str, bytes)) or not all(_is_int(t) for t in ids):
            raise TypeError(f"prompts[{i}]['prompt_token_ids'] must be a list of integers")
        if item.get("attention_mask") is not None:
            _check_attention_mask(item["attention_mask"], len(ids), i)
    elif "prompt" in item:
        if not isinstance(item["prompt"], str):
            raise TypeError(f"prompts[{i}]['prompt'] must be a string, got {type(item['prompt']).__name__}")
        check_unicode(item["prompt"], f"prompts[{i}]['prompt']")
        if not isinstance(item.get("instruction", ""), str):
            raise TypeError(
                f"prompts[{i}]['instruction'] must be a string, got {type(item['instruction']).__name__}"
            )
        check_unicode(item.get("instruction", ""), f"prompts[{i}]['instruction']")
    else:
        raise TypeError(f"prompts[{i}] is a dict without 'prompt' or 'prompt_token_ids'")


def _check_attention_mask(mask: object, n: int, i: int) -> None:
    if (
        not isinstance(mask, Sequence)
        or isinstance(mask, (str, bytes))
        or any(m not in (0, 1) or isinstance(m, float) for m in mask)
    ):
        raise TypeError(f"prompts[{i}]['attention_mask'] must be a list of 0 / 1 integers")
    if len(mask) != n:
        raise ValueError(f"prompts[{i}]['attention_mask'] has {len(mask)} entries for {n} tokens")
    if n and not any(mask):
        raise ValueError(f"prompts[{i}]['attention_mask'] attends to no position")


TOKEN_TASKS = ("token_embed", "token_classify")


def check_attention_masks(items: list[PromptType], task: str) -> None:
    """Prompts with an ``attention_mask`` are for the per-token tasks only: a sequence pooler
    (CLS / MEAN / LAST) would read positions the model did not attend to."""
    if task in TOKEN_TASKS:
        return
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("attention_mask") is not None:
            raise ValueError(
                f"prompts[{i}] has an attention_mask, which only the {list(TOKEN_TASKS)} tasks accept "
                f"(task: {task!r})"
            )


class InputProcessor:
    """Tokenizes prompts with the model's tokenizer and limits.

    Args:
        tokenizer: a Hugging Face tokenizer.
        max_model_len: the model's token limit; a longer prompt is an error (vLLM's
            :class:`~vllm_pool.engine.lengths.PromptTooLongError`) unless its params set
            ``truncate_prompt_tokens``.
        vocab_size: the embedding table size, to check given token ids.
        do_lower_case: lowercase texts first (Sentence Transformers' ``do_lower_case``).
        use_token_type_ids: pass segment ids of text pairs to the model (BERT-like models).
    """

    def __init__(
        self,
        tokenizer: Any,
        max_model_len: int,
        vocab_size: int,
        do_lower_case: bool = False,
        use_token_type_ids: bool = False,
    ):
        self.tokenizer = tokenizer
        self.use_token_type_ids = use_token_type_ids
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        self.do_lower_case = do_lower_case
        self.encoder = FastEncoder(tokenizer)
        # the fewest tokens a text (a text pair) can be cut to: the special tokens the tokenizer adds
        self.min_text_tokens = num_special_tokens(tokenizer, pair=False)
        self.min_pair_tokens = num_special_tokens(tokenizer, pair=True)
        self._instruction_lens: dict[str, int] = {}
        # a Hugging Face tokenizer changes its truncation settings per call: one caller at a
        # time (the fast encoder's per-thread copies need no lock)
        self.lock = threading.RLock()

    def instruction_len(self, instruction: str) -> int:
        """Tokens of ``instruction`` at the start of a prompt: its tokenization with special
        tokens, less a trailing special token (Sentence Transformers' prompt length)."""
        n = self._instruction_lens.get(instruction)
        if n is None:
            text = instruction.lower() if self.do_lower_case else instruction
            with self.lock:
                ids = self.tokenizer(text, add_special_tokens=True)["input_ids"] if text else []
            special = set(getattr(self.tokenizer, "all_special_ids", []) or [])
            n = len(ids) - (1 if ids and ids[-1] in special else 0)
            if len(self._instruction_lens) >= 1024:  # bounded: a server's clients may vary them
                self._instruction_lens.clear()
            self._instruction_lens[instruction] = n
        return n

    def limit(self, params: PoolingParams, index: int) -> int | None:
        """The length ``params`` cut a prompt to (``None``: not cut, its length is checked)."""
        t = params.truncate_prompt_tokens
        if t is None:
            return None
        if t == -1:
            return self.max_model_len
        if t > self.max_model_len:
            raise TruncationTooLargeError(t, self.max_model_len)
        return t

    def check_cut(self, limit: int | None, where: str, pair: bool = False, n: int | None = None) -> None:
        """:func:`~vllm_pool.engine.lengths.check_cut` with this tokenizer's special tokens."""
        if limit is not None:
            check_cut(limit, self.min_pair_tokens if pair else self.min_text_tokens, where, pair, n)

    def check_length(
        self, n: int, where: str, task: str, max_embed_len: int | None = None, chunked: bool = False
    ) -> None:
        """Raise vLLM's error for an uncut prompt of ``n`` tokens over the limit.

        Args:
            n: the prompt's token count.
            where: the input's name in the message.
            task: the pooling task (names the operation in the server's message).
            max_embed_len: ``pooler_config.max_embed_len`` (``embed`` only): a cap of its own.
            chunked: chunked processing is on (``embed`` only): longer than ``max_model_len``
                is allowed, up to ``max_embed_len`` (without it, the cap stays ``max_model_len``,
                as in vLLM).
        """
        if max_embed_len is not None and n > max_embed_len:
            raise PromptTooLongError(where, n, max_embed_len, task, kind="embed")
        if (not chunked or max_embed_len is None) and n > self.max_model_len:
            raise PromptTooLongError(where, n, self.max_model_len, task)

    def __call__(
        self,
        prompts: list[PromptType],
        params: list[PoolingParams],
        offset: int = 0,
        *,
        task: str = "embed",
        max_embed_len: int | None = None,
        chunked: bool = False,
    ) -> list[Request]:
        """Tokenize ``prompts``; ``offset`` is the position of ``prompts[0]`` in the caller's list.

        ``task``, ``max_embed_len`` and ``chunked`` set the length check (:meth:`check_length`).
        """
        with self.lock if not self.encoder.available else contextlib.nullcontext():
            return self._tokenize(prompts, params, offset, (task, max_embed_len, chunked))

    def _tokenize(
        self,
        prompts: list[PromptType],
        params: list[PoolingParams],
        offset: int,
        policy: tuple[str, int | None, bool],
    ) -> list[Request]:
        requests: list[Request | None] = [None] * len(prompts)
        texts: dict[int | None, list[int]] = {}  # limit -> prompt indices
        for i, (prompt, p) in enumerate(zip(prompts, params)):
            limit = self.limit(p, i + offset)
            if isinstance(prompt, dict) and "prompt_token_ids" in prompt:
                ids = list(prompt["prompt_token_ids"])
                requests[i] = self._from_ids(i + offset, ids, p, limit, prompt.get("attention_mask"), policy)
            else:
                self.check_cut(limit, f"prompts[{i + offset}]")
                texts.setdefault(limit, []).append(i)
        for limit, indices in texts.items():
            batch = [_text(prompts[i]) for i in indices]
            if self.do_lower_case:
                batch = [t.lower() for t in batch]
            encoded = self._encode(batch, NO_LIMIT if limit is None else limit)
            for j, (i, ids) in enumerate(zip(indices, encoded)):
                if not ids:
                    raise ValueError(f"prompts[{i + offset}] is empty: it has no tokens")
                if limit is None:
                    self.check_length(len(ids), f"prompts[{i + offset}]", *policy)
                else:
                    self.check_cut(limit, f"prompts[{i + offset}]", n=len(ids))
                instruction = _instruction(prompts[i])
                requests[i] = Request(
                    index=i + offset,
                    prompt_token_ids=ids,
                    params=params[i],
                    prompt=batch[j],
                    instruction_len=self.instruction_len(instruction) if instruction else 0,
                )
        return [r for r in requests if r is not None]

    def _encode(self, texts: list[str], limit: int) -> list[list[int]]:
        if self.encoder.available:
            return self.encoder(texts, limit)
        return self.tokenizer(texts, truncation=True, max_length=limit, add_special_tokens=True)["input_ids"]

    def precheck(
        self,
        prompts: list[PromptType],
        params: list[PoolingParams],
        *,
        task: str = "embed",
        max_embed_len: int | None = None,
        chunked: bool = False,
    ) -> None:
        """The checks of :meth:`__call__` that need no tokenizer (limits, token-id prompts)."""
        policy = (task, max_embed_len, chunked)
        for i, (prompt, p) in enumerate(zip(prompts, params)):
            limit = self.limit(p, i)
            if isinstance(prompt, dict) and "prompt_token_ids" in prompt:
                self._from_ids(i, list(prompt["prompt_token_ids"]), p, limit, None, policy)
            else:
                self.check_cut(limit, f"prompts[{i}]")

    def pairs(self, texts_1: list[str], texts_2: list[str], params: list[PoolingParams]) -> list[Request]:
        """Tokenize ``(texts_1[i], texts_2[i])`` as text pairs (cross-encoders).

        With ``truncate_prompt_tokens``, only the second text is cut when a pair is too long
        (``only_second``), unless the first alone is over the limit; without it, a pair over
        ``max_model_len`` is an error (:class:`~vllm_pool.engine.lengths.PromptTooLongError`).
        """
        with self.lock:
            return self._pairs(texts_1, texts_2, params)

    def _pairs(self, texts_1: list[str], texts_2: list[str], params: list[PoolingParams]) -> list[Request]:
        for i, (a, b) in enumerate(zip(texts_1, texts_2)):
            for name, text in (("data_1", a), ("data_2", b)):
                if not isinstance(text, str):
                    raise TypeError(f"score inputs must be strings; {name} item {i} is {type(text).__name__}")
                check_unicode(text, f"{name} item {i}")
        if self.do_lower_case:
            texts_1, texts_2 = [a.lower() for a in texts_1], [b.lower() for b in texts_2]
        by_limit: dict[int | None, list[int]] = {}
        for i, p in enumerate(params):
            limit = self.limit(p, i)
            self.check_cut(limit, f"pair {i}", pair=True)
            by_limit.setdefault(limit, []).append(i)
        requests: dict[int, Request] = {}
        for limit, indices in by_limit.items():
            pairs = [(texts_1[i], texts_2[i]) for i in indices]
            cut = NO_LIMIT if limit is None else limit
            encoded = self.encoder.pairs(pairs, cut) if self.encoder.pairs_available else None
            for j, i in enumerate(indices):
                ids, type_ids = encoded[j] if encoded is not None else self._pair(*pairs[j], cut)
                if limit is None:
                    self.check_length(len(ids), f"pair {i}", "score")
                else:
                    self.check_cut(limit, f"pair {i}", pair=True, n=len(ids))
                requests[i] = Request(
                    index=i,
                    prompt_token_ids=ids,
                    params=params[i],
                    token_type_ids=type_ids if self.use_token_type_ids else None,
                )
        return [requests[i] for i in range(len(params))]

    def _pair(self, a: str, b: str, limit: int) -> tuple[list[int], list[int] | None]:
        # a batch of one pair: transformers reads a lone ``b == ""`` as no pair (separators lost)
        try:
            enc = self.tokenizer([a], [b], truncation="only_second", max_length=limit)
        except Exception:  # the first text alone is over the limit
            enc = self.tokenizer([a], [b], truncation="longest_first", max_length=limit)
        types = enc.get("token_type_ids")
        return enc["input_ids"][0], None if types is None else types[0]

    def _from_ids(
        self,
        i: int,
        ids: list[int],
        params: PoolingParams,
        limit: int | None,
        mask: Sequence[int] | None = None,
        policy: tuple[str, int | None, bool] = ("embed", None, False),
    ) -> Request:
        if not ids:
            raise ValueError(f"prompts[{i}]['prompt_token_ids'] is empty")
        bad = [t for t in ids if t < 0 or t >= self.vocab_size]
        if bad:
            raise ValueError(
                f"prompts[{i}]['prompt_token_ids'] has ids outside the vocabulary "
                f"[0, {self.vocab_size}): {bad[:5]}"
            )
        attention = None if mask is None or all(mask) else [int(m) for m in mask]
        if limit is not None:
            # cut on the tokenizer's side, as vLLM does for token prompts
            keep = slice(-limit, None) if self.truncation_side == "left" else slice(0, limit)
            ids = ids[keep]
            attention = attention[keep] if attention is not None else None
            if attention is not None and not any(attention):
                raise ValueError(f"prompts[{i}]['attention_mask'] attends to no position after truncation")
        else:
            self.check_length(len(ids), f"prompts[{i}]", *policy)
        return Request(index=i, prompt_token_ids=ids, params=params, attention_mask=attention)

    @property
    def truncation_side(self) -> str:
        return str(getattr(self.tokenizer, "truncation_side", "right"))


def _text(prompt: PromptType) -> str:
    return prompt if isinstance(prompt, str) else prompt.get("instruction", "") + prompt["prompt"]


def _instruction(prompt: PromptType) -> str:
    return "" if isinstance(prompt, str) else prompt.get("instruction", "")
