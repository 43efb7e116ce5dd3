"""HuggingFace spellings of the classes' options, mapped onto our fields in one place.

Users arrive from langchain-huggingface's ``HuggingFaceEmbeddings`` / ``HuggingFaceCrossEncoder``,
llama-index's ``HuggingFaceEmbedding`` / ``SentenceTransformerRerank`` and Sentence Transformers,
PyLate and RAGatouille. :func:`translate` rewrites their keyword arguments
(``model_name=``, ``model_kwargs={"device": ...}``, ``encode_kwargs={"batch_size": ...}``,
``max_length=``, ``show_progress_bar=``...) into the fields of the class being built, before
pydantic (or the constructor) sees them. A name with no equivalent raises an error naming
what to use instead; an unknown name raises with the closest field names.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

logger = logging.getLogger(__name__)

Targets = tuple[str, ...]


def _pooling(value: Any) -> dict[str, Any]:
    """llama-index's ``pooling="cls" | "mean" | "last"`` as a pooler override."""
    name = str(getattr(value, "value", value)).upper()
    if name not in ("CLS", "MEAN", "LAST"):
        raise ValueError(f"pooling={value!r} is not supported: use 'cls', 'mean' or 'last'")
    return {"pooling_type": name}


def _dtype(value: Any) -> str:
    """A ``torch.dtype`` or a dtype name (``model_kwargs={"torch_dtype": ...}``) as our ``dtype``."""
    text = str(value)
    return text.removeprefix("torch.")


def _float32_only(value: Any) -> None:
    if value != "float32":
        raise ValueError(
            f"encode_kwargs precision={value!r} is not supported: the embeddings are float32 "
            "(quantize in the index instead)"
        )


def _sentence_embedding_only(value: Any) -> None:
    if value != "sentence_embedding":
        raise ValueError(
            f"encode_kwargs output_value={value!r} is not supported: use VllmPoolColBERTRetriever "
            "for token embeddings"
        )


# -- the table ---------------------------------------------------------------------------
# name -> the fields it may set, first existing field wins ("*" prefix: set every existing one;
# "engine_kwargs." prefix: a key of engine_kwargs), and an optional value conversion
ALIASES: dict[str, tuple[Targets, Callable[[Any], Any] | None]] = {
    "model_name": (("model",), None),
    "model_name_or_path": (("model",), None),  # Sentence Transformers, PyLate
    "pretrained_model_name_or_path": (("model",), None),  # RAGatouille
    "max_length": (("truncate_prompt_tokens", "doc_maxlen"), None),  # ST max_seq_length, CrossEncoder
    "max_seq_length": (("truncate_prompt_tokens", "doc_maxlen"), None),
    "show_progress_bar": (("show_progress",), None),
    "normalize_embeddings": (("normalize",), None),
    "truncate_dim": (("dimensions",), None),
    "batch_size": (("batch_size", "embed_batch_size"), None),
    "embed_batch_size": (("embed_batch_size", "batch_size"), None),
    "text_instruction": (("text_instruction", "document_instruction"), None),
    "document_instruction": (("document_instruction", "text_instruction"), None),
    "embed_instruction": (("document_instruction", "text_instruction"), None),  # HF Instruct/BGE classes
    "query_length": (("query_maxlen",), None),  # PyLate
    "document_length": (("doc_maxlen",), None),  # PyLate
    "max_document_length": (("doc_maxlen",), None),  # RAGatouille
    "revision": (("engine_kwargs.revision",), None),
    "pooling": (("engine_kwargs.pooler_config",), _pooling),
    "config_kwargs": (("engine_kwargs.hf_overrides",), dict),
}

ENCODE_KWARGS: dict[str, tuple[Targets, Callable[[Any], Any] | None]] = {
    "batch_size": (("batch_size", "embed_batch_size"), None),
    "show_progress_bar": (("show_progress",), None),
    "normalize_embeddings": (("normalize",), None),
    "truncate_dim": (("dimensions",), None),
    "device": (("device",), None),
    "prompt_name": (("*query_prompt_name", "*document_prompt_name", "*text_prompt_name"), None),
    "prompt": (("*query_instruction", "*document_instruction", "*text_instruction"), None),
}
"""Keys of ``encode_kwargs`` (Sentence Transformers ``encode`` arguments)."""

ENCODE_CHECKED: dict[str, Callable[[Any], None]] = {
    "precision": _float32_only,
    "output_value": _sentence_embedding_only,
    "convert_to_numpy": lambda value: None,  # the classes return lists either way
    "convert_to_tensor": lambda value: None,
}
"""``encode_kwargs`` keys that only need an acceptable value."""

QUERY_ENCODE_KWARGS: dict[str, tuple[Targets, Callable[[Any], Any] | None]] = {
    **ENCODE_KWARGS,
    "prompt_name": (("query_prompt_name",), None),
    "prompt": (("query_instruction",), None),
}
"""Keys of langchain-huggingface's ``query_encode_kwargs`` (queries only)."""

MODEL_KWARGS: dict[str, tuple[Targets, Callable[[Any], Any] | None]] = {
    "device": (("device",), None),
    "trust_remote_code": (("trust_remote_code",), None),
    "revision": (("engine_kwargs.revision",), None),
    "truncate_dim": (("dimensions",), None),
    "max_length": (("truncate_prompt_tokens", "doc_maxlen"), None),  # CrossEncoder(max_length=)
    "torch_dtype": (("dtype",), _dtype),
    "dtype": (("dtype",), _dtype),
    "config_kwargs": (("engine_kwargs.hf_overrides",), dict),
}
"""Keys of ``model_kwargs`` (``SentenceTransformer`` / ``CrossEncoder`` arguments, and their
nested ``model_kwargs`` passed to ``from_pretrained``)."""

REJECTED: dict[str, str] = {
    "cache_folder": "pass a local folder as model=, or set HF_HOME for the download cache",
    "multi_process": "one engine runs in this process; use device='cuda:N' per instance, or "
    "vllm_pool.integrations.ray for several GPUs",
    "parallel_process": "one engine runs in this process; use device='cuda:N' per instance, or "
    "vllm_pool.integrations.ray for several GPUs",
    "target_devices": "use device='cuda:N' per instance, or vllm_pool.integrations.ray for several GPUs",
    "tokenizer_name": "the tokenizer is the model folder's own (model=)",
    "tokenizer": "the tokenizer is the model folder's own (model=)",
    "tokenizer_kwargs": "the tokenizer is the model folder's own (model=); cut texts with max_length=",
    "prompts": "use query_instruction= / the document instruction field, or *_prompt_name= for the "
    "model's own prompts",
    "default_prompt_name": "use query_prompt_name= and the document prompt-name field",
    "token": "set the HF_TOKEN environment variable",
    "local_files_only": "set HF_HUB_OFFLINE=1, or pass a local folder as model=",
    "client": "the engine is private; choose it with model= and engine_kwargs=",
    "backend": "only the PyTorch backend runs here (backend='torch')",
}
"""Names with no equivalent here, and what to use instead."""

ALWAYS_ALIASES = frozenset({"model_name"})
"""Spellings translated even where the class has a field of that name (LlamaIndex's
``BaseEmbedding.model_name`` only reports the model: ``model`` loads it)."""

DICT_ARGS = {
    "model_kwargs": MODEL_KWARGS,
    "cross_encoder_kwargs": MODEL_KWARGS,  # llama-index SentenceTransformerRerank
    "encode_kwargs": ENCODE_KWARGS,
    "query_encode_kwargs": QUERY_ENCODE_KWARGS,
}


class _Out:
    """The translated keyword arguments, refusing two spellings with different values."""

    def __init__(self, owner: str, fields: Collection[str]) -> None:
        self.owner = owner
        self.fields = fields
        self.values: dict[str, Any] = {}
        self.source: dict[str, str] = {}

    def set(self, target: str, value: Any, source: str) -> None:
        if target.startswith("engine_kwargs."):
            key = target.split(".", 1)[1]
            engine = dict(self.values.get("engine_kwargs") or {})
            if key in engine and engine[key] != value:
                raise ValueError(
                    f"{self.owner}: {source}={value!r} conflicts with engine_kwargs[{key!r}]={engine[key]!r}"
                )
            engine[key] = value
            self.values["engine_kwargs"] = engine
            return
        if target in self.values and self.values[target] != value:
            raise ValueError(
                f"{self.owner}: {source}={value!r} conflicts with {self.source[target]}="
                f"{self.values[target]!r} (both set {target}; give one)"
            )
        self.values[target] = value
        self.source.setdefault(target, source)

    def apply(self, name: str, value: Any, row: tuple[Targets, Callable[[Any], Any] | None]) -> None:
        targets, convert = row
        value = convert(value) if convert is not None else value
        every = [t[1:] for t in targets if t.startswith("*") and t[1:] in self.fields]
        if every:
            for target in every:
                if target not in self.values:  # a field given itself, or query_encode_kwargs' own, wins
                    self.set(target, value, name)
            return
        for target in targets:
            if target.startswith("engine_kwargs.") and "engine_kwargs" in self.fields:
                self.set(target, value, name)
                return
            if target in self.fields:
                self.set(target, value, name)
                return
        raise ValueError(
            f"{self.owner} has no option that {name} maps to (it would set {' or '.join(targets)})"
        )


def translate(
    owner: str,
    fields: Collection[str],
    given: Mapping[str, Any],
    unknown_error: type[Exception] = ValueError,
) -> dict[str, Any]:
    """Rewrite HuggingFace-style keyword arguments into ``fields``.

    Args:
        owner: the class name, for error messages.
        fields: the option names of the class.
        given: the keyword arguments as passed.
        unknown_error: the exception raised for a name that is neither a field nor a known
            spelling (``TypeError`` for plain constructors, as Python raises).

    Returns:
        The keyword arguments with every known spelling replaced by its field.

    Raises:
        ValueError: a rejected name (the message names what to use), a value with no
            equivalent, or two spellings of one option with different values.
    """
    out = _Out(owner, fields)
    spelled = [name for name in given if name not in fields or name in ALWAYS_ALIASES]
    spelled.sort(key=lambda name: name != "query_encode_kwargs")  # before encode_kwargs
    for name, value in given.items():
        if name not in spelled:
            out.set(name, value, name)  # our own fields first: a spelling may only agree with them
    for name in spelled:
        value = given[name]
        if name in ALIASES:
            out.apply(name, value, ALIASES[name])
        elif name in DICT_ARGS:
            _apply_dict(out, name, value, DICT_ARGS[name])
        elif name in REJECTED:
            raise ValueError(f"{owner}: {name}= is not supported here: {REJECTED[name]}")
        else:
            close = difflib.get_close_matches(name, _accepted(fields), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise unknown_error(f"{owner} got an unknown option {name!r}{hint}")
    return out.values


def _maps_into(row: tuple[Targets, Callable[[Any], Any] | None], fields: Collection[str]) -> bool:
    return any(
        t.lstrip("*") in fields or (t.startswith("engine_kwargs.") and "engine_kwargs" in fields)
        for t in row[0]
    )


def _accepted(fields: Collection[str]) -> list[str]:
    """The names a class with ``fields`` takes: its fields, the spellings that map into them,
    and the dict arguments with at least one such key (what an unknown name's hint offers)."""
    aliases = [name for name, row in ALIASES.items() if _maps_into(row, fields)]
    dicts = [name for name, rows in DICT_ARGS.items() if any(_maps_into(r, fields) for r in rows.values())]
    return [*fields, *aliases, *dicts]


_capped: set[tuple[str, str, str, int]] = set()


def capped_length(
    llm: Any, value: int | None, owner: str, field: str = "truncate_prompt_tokens"
) -> int | None:
    """A token length setting (``truncate_prompt_tokens``, the ColBERT ``doc_maxlen`` /
    ``query_maxlen``; ``max_length`` / ``max_seq_length`` in the HuggingFace spellings) capped
    at the engine's ``max_model_len``, as Sentence Transformers and ``HuggingFaceEmbedding``
    cut to the model's limit: a value over it would make every call fail (vLLM's
    ``TruncationTooLargeError``). Logs one warning per class, model, setting and value.
    ``None`` and ``-1`` (the model's limit) are returned as given."""
    limit = getattr(getattr(llm, "model_config", None), "max_model_len", None)
    if value is None or isinstance(value, bool) or not isinstance(value, int) or not isinstance(limit, int):
        return value
    if value <= limit:
        return value
    model = str(getattr(llm, "model_name", "the model"))
    if (owner, model, field, value) not in _capped:
        _capped.add((owner, model, field, value))
        logger.warning(
            "%s: %s=%d is over the token limit of %s (max_model_len=%d): using %d instead (pass "
            "max_model_len= to raise the limit, up to the model's position embeddings)",
            owner, field, value, model, limit, limit,
        )  # fmt: skip
    return limit


def cap_truncation(owner: Any) -> None:
    """Cap ``owner.truncate_prompt_tokens`` (where its class has the field) at the model's
    limit (:func:`capped_length`), on ``owner`` itself."""
    if "truncate_prompt_tokens" not in type(owner).model_fields:
        return
    capped = capped_length(owner.llm, owner.truncate_prompt_tokens, type(owner).__name__)
    if capped != owner.truncate_prompt_tokens:
        owner.truncate_prompt_tokens = capped


def capped_colbert_lengths(llm: Any, settings: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """ColBERT encoder ``settings`` with ``query_maxlen`` / ``doc_maxlen`` capped at the
    model's limit (:func:`capped_length`)."""
    out = dict(settings)
    for field in ("query_maxlen", "doc_maxlen"):
        if field in out:
            out[field] = capped_length(llm, out[field], owner, field)
    return out


def _apply_dict(
    out: _Out, name: str, value: Any, table: Mapping[str, tuple[Targets, Callable[[Any], Any] | None]]
) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise TypeError(f"{out.owner}: {name} must be a dict, got {type(value).__name__}")
    for key, item in value.items():
        where = f"{name}[{key!r}]"
        if name in ("model_kwargs", "cross_encoder_kwargs") and key == "model_kwargs":
            _apply_dict(out, where, item, MODEL_KWARGS)  # ST's nested from_pretrained arguments
        elif key in table:
            out.apply(where, item, table[key])
        elif key in ENCODE_CHECKED and table is not MODEL_KWARGS:
            ENCODE_CHECKED[key](item)
            logger.debug("%s: %s=%r has no effect (outputs are lists)", out.owner, where, item)
        elif key in REJECTED:
            raise ValueError(f"{out.owner}: {where} is not supported here: {REJECTED[key]}")
        else:
            raise ValueError(
                f"{out.owner}: {where} is not supported here (accepted keys: {sorted(table)}); "
                "other engine options go in engine_kwargs="
            )
