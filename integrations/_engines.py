"""One loaded engine per configuration, shared by every LangChain and LlamaIndex class.

The frameworks build many instances (standard test suites, ``copy.deepcopy``, pickling,
LlamaIndex re-running ``__init__`` on unpickle): all instances with the same engine
options get the same ``vllm_pool.LLM`` from :func:`get_engine`. An :class:`EngineRef` is
what the classes keep in a private attribute: it pickles and deep-copies as its options
only, and finds the shared engine again on first use.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._progress import CallProgress

logger = logging.getLogger(__name__)

OWN_FIELDS = ("model", "dtype", "device", "max_model_len", "trust_remote_code")
"""``vllm_pool.EngineArgs`` options that the classes expose as fields of their own."""


def engine_kwargs_keys() -> tuple[str, ...]:
    """Keys allowed in ``engine_kwargs``: every other ``vllm_pool.EngineArgs`` option."""
    from vllm_pool import EngineArgs

    return tuple(name for name in EngineArgs.names() if name not in OWN_FIELDS)


ENGINE_KWARGS_HELP = (
    "Other vllm_pool.LLM options (vllm_pool.EngineArgs): max_num_batched_tokens, max_num_seqs, "
    "pooler_config, hf_overrides, convert, runner, revision, io_processor_plugin, compile, packed."
)
"""The description of the classes' ``engine_kwargs`` field (a test checks it names every key)."""

TRUNCATE_HELP = (
    "Cut texts longer than the model's limit to it (True, as Sentence Transformers and "
    "HuggingFaceEmbeddings do), or let the engine's error through (False: vLLM's behaviour, a "
    "ValueError naming the token count and the limit). An explicit truncate_prompt_tokens wins. "
    "ColBERT classes cut to doc_maxlen either way unless False, where a document over doc_maxlen "
    "is an error (split_long_documents=True indexes it whole)."
)
"""The description of the classes' ``truncate`` field (LangChain, LlamaIndex, Ray)."""


def truncation(truncate: bool, truncate_prompt_tokens: int | None) -> int | None:
    """The ``truncate_prompt_tokens`` an engine call gets: the caller's, else ``-1`` (the
    model's limit) when ``truncate``, else ``None`` (an over-long text is an error)."""
    if truncate_prompt_tokens is not None:
        return truncate_prompt_tokens
    return -1 if truncate else None


@dataclass(frozen=True)
class EngineOptions:
    """The arguments of ``vllm_pool.LLM`` that identify one loaded engine.

    Attributes:
        model: a local folder or a Hugging Face Hub id.
        dtype: ``"auto"``, ``"float32"``, ``"bfloat16"``, ``"float16"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        max_model_len: token limit (``None``: the model's).
        trust_remote_code: allow custom model code.
        engine_kwargs: other ``LLM`` options as sorted JSON (hashable).
    """

    model: str
    dtype: str = "auto"
    device: str = "auto"
    max_model_len: int | None = None
    trust_remote_code: bool = False
    engine_kwargs: str = "{}"

    @classmethod
    def make(
        cls,
        model: str,
        dtype: str = "auto",
        device: str = "auto",
        max_model_len: int | None = None,
        trust_remote_code: bool = False,
        engine_kwargs: Mapping[str, Any] | None = None,
    ) -> EngineOptions:
        """Build options, checking ``engine_kwargs`` keys.

        Raises:
            ValueError: an ``engine_kwargs`` key that is not an engine option.
        """
        from vllm_pool import EngineArgs

        extra = dict(engine_kwargs or {})
        allowed = engine_kwargs_keys()
        unknown = sorted(set(extra) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown engine_kwargs {unknown}: allowed keys are {sorted(allowed)} "
                "(model, dtype, device, max_model_len and trust_remote_code are fields of their own)"
            )
        # every value is checked now, with the option's name, before any engine loads
        EngineArgs(str(model), dtype=dtype, device=device, max_model_len=max_model_len,
                   trust_remote_code=trust_remote_code, **extra)  # fmt: skip
        for key, value in extra.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise TypeError(
                    f"engine_kwargs[{key!r}] must be JSON-like (the options are shared and pickled "
                    f"by value), got {type(value).__name__}"
                ) from None
        return cls(
            model=str(model),
            dtype=str(dtype),
            device=str(device),
            max_model_len=max_model_len,
            trust_remote_code=bool(trust_remote_code),
            engine_kwargs=json.dumps(extra, sort_keys=True),
        )

    def engine_args(self) -> Any:
        """These options as a ``vllm_pool.EngineArgs``."""
        from vllm_pool import EngineArgs

        own = {name: getattr(self, name) for name in OWN_FIELDS}
        return EngineArgs(**own, **json.loads(self.engine_kwargs))

    def build(self) -> Any:
        """Load a new ``vllm_pool.LLM`` with these options (use :func:`get_engine` instead)."""
        from vllm_pool import LLM

        return LLM.from_engine_args(self.engine_args())


_cache: dict[EngineOptions, Any] = {}
_key_locks: dict[EngineOptions, threading.Lock] = {}
_cache_lock = threading.Lock()


def get_engine(options: EngineOptions) -> Any:
    """Return the engine for ``options``, loading it once per process.

    Thread-safe: concurrent callers with the same options wait for one load; different
    options load in parallel.
    """
    engine = _cache.get(options)
    if engine is not None:
        return engine
    with _cache_lock:
        lock = _key_locks.setdefault(options, threading.Lock())
    with lock:
        engine = _cache.get(options)
        if engine is None:
            logger.info("loading engine for %s", options)
            engine = options.build()
            _cache[options] = engine
        return engine


_on_clear: list[Any] = []


def on_clear(callback: Any) -> None:
    """Call ``callback()`` from :func:`clear_engine_cache` (caches of objects holding engines)."""
    _on_clear.append(callback)


def clear_engine_cache() -> None:
    """Forget every cached engine, and every cached object holding one (the ColBERT
    encoders); instances already holding an engine keep it alive until they go."""
    with _cache_lock:
        _cache.clear()
        _key_locks.clear()
    for callback in _on_clear:
        callback()


class EngineRef:
    """A picklable handle to the shared engine of some :class:`EngineOptions`.

    Pickles and deep-copies as its options only; ``.llm`` resolves (and caches) the engine.
    """

    __slots__ = ("options", "_llm")

    def __init__(self, options: EngineOptions) -> None:
        self.options = options
        self._llm: Any = None

    @classmethod
    def loaded_for(cls, fields: Any) -> EngineRef:
        """The engine of an object's engine fields (``model``, ``dtype``, ``device``,
        ``max_model_len``, ``trust_remote_code``, ``engine_kwargs``), loaded now so that a
        bad model id fails when the object is built."""
        ref = cls(
            EngineOptions.make(
                fields.model,
                fields.dtype,
                fields.device,
                fields.max_model_len,
                fields.trust_remote_code,
                fields.engine_kwargs,
            )
        )
        ref.llm  # noqa: B018
        return ref

    @property
    def llm(self) -> Any:
        """The shared ``vllm_pool.LLM`` (loaded on first use)."""
        if self._llm is None:
            self._llm = get_engine(self.options)
        return self._llm

    def __getstate__(self) -> dict[str, Any]:
        return {"options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.options = state["options"]
        self._llm = None

    def __deepcopy__(self, memo: dict[int, Any]) -> EngineRef:
        ref = EngineRef(self.options)
        ref._llm = self._llm  # the engine is shared, never copied
        return ref

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EngineRef) and other.options == self.options

    def __hash__(self) -> int:
        return hash(self.options)

    def __repr__(self) -> str:
        return f"EngineRef({self.options.model!r})"


# -- the few engine calls the classes make ------------------------------------------------
def resolve_prefix(llm: Any, instruction: str | None, prompt_name: str | None, kind: str) -> str:
    """The text put before every query or document.

    Order: an explicit ``instruction``; else the Sentence Transformers prompt
    ``prompt_name`` from the model's config; else, like Sentence Transformers'
    ``encode_query`` / ``encode_document``, the model's ``"query"`` prompt (queries) or
    ``"document"`` / ``"passage"`` / ``"corpus"`` prompt (documents); else its
    ``default_prompt_name``; else nothing.

    Args:
        llm: the engine.
        instruction: a literal prefix, or ``None``.
        prompt_name: a key of the model's ``prompts``, or ``None``.
        kind: ``"query"`` or ``"document"``.

    Raises:
        ValueError: ``prompt_name`` is not one of the model's prompts.
    """
    if instruction is not None:
        return instruction
    st = getattr(getattr(llm, "model_config", None), "st", None)
    prompts: dict[str, str] = dict(getattr(st, "prompts", None) or {})
    if prompt_name is not None:
        if prompt_name not in prompts:
            raise ValueError(
                f"prompt name {prompt_name!r} is not in the prompts of {llm.model_name} "
                f"(config_sentence_transformers.json has {sorted(prompts)})"
            )
        return prompts[prompt_name]
    names = ("query",) if kind == "query" else ("document", "passage", "corpus")
    for name in names:
        if name in prompts:
            return prompts[name]
    default = getattr(st, "default_prompt_name", None)
    return prompts.get(default, "") if default else ""


def embed_texts(
    llm: Any,
    texts: Sequence[str],
    *,
    prefix: str = "",
    dimensions: int | None = None,
    normalize: bool | None = None,
    truncate_prompt_tokens: int | None = None,
    truncate: bool = True,
    batch_size: int = 256,
    show_progress: bool = False,
    positions: Sequence[int | str] | None = None,
) -> list[list[float]]:
    """Embed ``texts`` (each preceded by ``prefix``) into lists of Python floats.

    Args:
        llm: the engine.
        texts: the texts (an empty list gives ``[]``).
        prefix: instruction put before each text (a Sentence Transformers prompt: kept out
            of pooling when the model's Pooling module says ``include_prompt: false``).
        dimensions: Matryoshka output size.
        normalize: L2-normalize (``None``: the model's default).
        truncate_prompt_tokens: cut each text to this many tokens.
        truncate: without ``truncate_prompt_tokens``, cut texts to the model's limit (else an
            over-long text is the engine's ``ValueError``).
        batch_size: texts per engine call (the engine batches by tokens inside a call).
        show_progress: show one progress bar over all the texts.
        positions: the caller's position of each text, when ``texts`` is a part of the
            caller's list (errors name ``texts[positions[i]]``, or ``positions[i]`` itself when
            it is a string such as ``"query"``; default: ``texts[i]``).

    Returns:
        One embedding per text, in order.

    Raises:
        TypeError: a text that is not a string (named by its position).
    """
    from vllm_pool.retrievers.positions import caller_positions, label

    from vllm_pool import PoolingParams, output_lists

    if isinstance(texts, str):
        raise TypeError("expected a list of strings, not a single string")
    texts = list(texts)  # a generator is read once, here
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            where = label("texts", i if positions is None else positions[i])
            raise TypeError(f"{where} must be a string, got {type(t).__name__}")
    # the prefix goes in as an instruction: the text run is prefix + text, and models whose ST
    # Pooling says include_prompt=false leave the prefix tokens out of pooling, as ST does
    texts = [{"prompt": t, "instruction": prefix} if prefix else t for t in texts]
    if not texts:
        return []
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    params = PoolingParams(dimensions=dimensions, normalize=normalize)
    out: list[list[float]] = []
    with CallProgress(len(texts), "Embedding", show_progress) as progress:  # one bar per call
        for start in range(0, len(texts), batch_size):
            with caller_positions(start, "texts", positions=positions):  # texts[280], not prompts[24]
                outs = llm.embed(
                    texts[start : start + batch_size],
                    params,
                    use_tqdm=progress.use_tqdm,
                    truncate_prompt_tokens=truncation(truncate, truncate_prompt_tokens),
                )
            out.extend(output_lists(outs))  # the whole batch in one conversion
    return out


def score_pairs(
    llm: Any,
    query: str,
    texts: Sequence[str],
    *,
    truncate_prompt_tokens: int | None = None,
    truncate: bool = True,
    batch_size: int = 256,
) -> list[float]:
    """Relevance of each of ``texts`` to ``query`` (1:N).

    A cross-encoder scores the pairs through ``LLM.score``; a bi-encoder (e.g. the default
    model) compares the embeddings with the model's Sentence Transformers similarity
    function (``similarity_fn_name``: cosine by default, or dot, euclidean, manhattan), as
    ``SentenceTransformer.similarity`` would. ``truncate``: as for :func:`embed_texts` (a
    cross-encoder's pair is cut on the document's side). Blank texts are scored, as Sentence
    Transformers' ``CrossEncoder.predict`` and ``similarity`` score them.
    """
    from vllm_pool import output_lists

    from ._similarity import scores, similarity_fn_name

    if not texts:
        return []
    tasks = llm.get_supported_tasks()
    if "score" not in tasks and "embed" in tasks:
        # a blank query or document is scored (embedded as [CLS] [SEP]), as Sentence Transformers does
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"documents[{i}] must be a string, got {type(text).__name__}")
        name = similarity_fn_name(llm)
        vectors = embed_texts(
            llm,
            [query, *texts],
            truncate_prompt_tokens=truncate_prompt_tokens,
            truncate=truncate,
            batch_size=batch_size,
            positions=["query", *(f"documents[{i}]" for i in range(len(texts)))],  # the caller's names
        )
        return [float(x) for x in scores(name, vectors[0], vectors[1:])]
    out: list[float] = []
    for start in range(0, len(texts), batch_size):
        outs = llm.score(
            query,
            list(texts[start : start + batch_size]),
            use_tqdm=False,
            truncate_prompt_tokens=truncation(truncate, truncate_prompt_tokens),
        )
        out.extend(output_lists(outs))  # the whole batch in one conversion
    return out
