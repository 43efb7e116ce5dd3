"""The task methods of :class:`~vllm_pool.engine.llm.LLM`: thin wrappers over its core verb.

``encode``, ``embed``, ``classify``, ``reward``, ``score`` and ``encode_multi`` hand their
inputs to the task's IO processor (``engine.task_io``, shared with the server), which checks
them, pairs them (``score``) and shapes the pooled tensors into the spec's output objects;
``LLM._run_io`` / ``run_prepared`` / ``_execute`` run them through the engine core.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypedDict, overload

from vllm_pool.engine.inputs import check_attention_masks, normalize_prompts
from vllm_pool.engine.outputs import (
    ClassificationRequestOutput,
    EmbeddingRequestOutput,
    PoolingOutput,
    PoolingRequestOutput,
    ScoringRequestOutput,
)
from vllm_pool.engine.params import PoolingParams

ENCODE_TASK_REQUIRED = (
    "pooling_task required for `LLM.encode`\n"
    "Please use one of the more specific methods or set the pooling_task when using `LLM.encode`:\n"
    '  - For embeddings, use `LLM.embed(...)` or `pooling_task="embed"`.\n'
    '  - For classification logits, use `LLM.classify(...)` or `pooling_task="classify"`.\n'
    "  - For similarity scores, use `LLM.score(...)`.\n"
    '  - For rewards, use `LLM.reward(...)` or `pooling_task="token_classify"`\n'
    '  - For token classification, use `pooling_task="token_classify"`\n'
    '  - For multi-vector retrieval, use `pooling_task="token_embed"`\n'
    '  - For IO Processor Plugins, use `pooling_task="plugin"`'
)
"""vLLM's message for ``LLM.encode`` without ``pooling_task``."""

if TYPE_CHECKING:
    from vllm_pool.engine.llm import LLM  # at run time engine.llm sets it here, for get_type_hints


class _TextPromptOptions(TypedDict, total=False):
    instruction: str


class TextPrompt(_TextPromptOptions):
    """``{"prompt": "text"}`` (vLLM's ``TextPrompt``), optionally with an ``"instruction"``
    (a Sentence Transformers prompt such as ``"query: "``: the text run is instruction + prompt)."""

    prompt: str


class _TokensPromptOptions(TypedDict, total=False):
    attention_mask: Sequence[int]


class TokensPrompt(_TokensPromptOptions):
    """``{"prompt_token_ids": [101, 7592, 102]}`` (vLLM's ``TokensPrompt``), optionally with an
    ``"attention_mask"`` of 0 / 1 per token (the ``token_embed`` / ``token_classify`` tasks only)."""

    prompt_token_ids: Sequence[int]


Prompt: TypeAlias = str | TextPrompt | TokensPrompt | Sequence[int]
"""One prompt: a text, a prompt dict, or a list of token ids."""
Prompts: TypeAlias = str | TextPrompt | TokensPrompt | Sequence[int | Prompt]
"""The ``prompts`` of the task methods: one prompt or a list of prompts (a list of ints is one
prompt). ``Prompt | Sequence[Prompt]``, written with one ``Sequence`` so that type checkers can
infer a list literal such as ``[{"prompt": "a"}, "b"]`` (mypy cannot with two)."""
ScoreInput: TypeAlias = str | TextPrompt | TokensPrompt
"""One side of a ``score`` pair: a text or a prompt dict (token ids are scored as their text)."""
ScoreInputs: TypeAlias = ScoreInput | Sequence[ScoreInput]
"""``score``'s ``data_1`` / ``data_2``: one input or a list of inputs."""


class TaskMethods:
    """Mixed into :class:`~vllm_pool.engine.llm.LLM`."""

    @overload
    def encode(
        self: LLM,
        prompts: Any,  # the IO processor plugin's input, e.g. ``{"texts": [...], "k": 2}``
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        *,
        pooling_task: Literal["plugin"],
        use_tqdm: bool = True,
        truncate_prompt_tokens: int | None = None,
        lora_request: object = None,
        tokenization_kwargs: dict[str, Any] | None = None,
    ) -> list[PoolingRequestOutput[Any]]: ...

    @overload
    def encode(
        self: LLM,
        prompts: Prompts,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        *,
        pooling_task: str | None = None,
        use_tqdm: bool = True,
        truncate_prompt_tokens: int | None = None,
        lora_request: object = None,
        tokenization_kwargs: dict[str, Any] | None = None,
    ) -> list[PoolingRequestOutput[PoolingOutput]]: ...

    def encode(
        self: LLM,
        prompts: Prompts | Any,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        *,
        pooling_task: str | None = None,
        use_tqdm: bool = True,
        truncate_prompt_tokens: int | None = None,
        lora_request: object = None,
        tokenization_kwargs: dict[str, Any] | None = None,
    ) -> list[PoolingRequestOutput[PoolingOutput]]:
        """Raw pooled tensors (``.outputs.data``) for any task the model supports.

        With ``pooling_task="plugin"`` the loaded IO processor plugin pre-processes
        ``prompts`` (then any input the plugin takes) and post-processes the outputs
        (``.outputs`` is then the plugin's result).
        """
        truncate_prompt_tokens = vllm_extras(lora_request, tokenization_kwargs, truncate_prompt_tokens)
        if pooling_task == "plugin":
            return self._run_plugin(prompts, pooling_params, use_tqdm, truncate_prompt_tokens)
        if pooling_task is None:
            supported = list(self.get_supported_tasks())
            raise ValueError(f"{ENCODE_TASK_REQUIRED} (this model supports {supported})")
        return self._run(prompts, pooling_task, pooling_params, use_tqdm, truncate_prompt_tokens)

    def embed(
        self: LLM,
        prompts: Prompts,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        *,
        use_tqdm: bool = True,
        truncate_prompt_tokens: int | None = None,
        lora_request: object = None,
        tokenization_kwargs: dict[str, Any] | None = None,
    ) -> list[EmbeddingRequestOutput]:
        """One embedding vector per prompt (``.outputs.embedding``)."""
        truncate_prompt_tokens = vllm_extras(lora_request, tokenization_kwargs, truncate_prompt_tokens)
        io = self.task_io["embed"]
        return self._run_io(io, prompts, pooling_params, use_tqdm, truncate_prompt_tokens)

    def classify(
        self: LLM,
        prompts: Prompts,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        *,
        use_tqdm: bool = True,
        truncate_prompt_tokens: int | None = None,
        lora_request: object = None,
        tokenization_kwargs: dict[str, Any] | None = None,
    ) -> list[ClassificationRequestOutput]:
        """Class probabilities per prompt (``.outputs.probs``; logits with ``use_activation=False``)."""
        truncate_prompt_tokens = vllm_extras(lora_request, tokenization_kwargs, truncate_prompt_tokens)
        io = self.task_io["classify"]
        return self._run_io(io, prompts, pooling_params, use_tqdm, truncate_prompt_tokens)

    def reward(
        self: LLM,
        prompts: Prompts,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        *,
        use_tqdm: bool = True,
        truncate_prompt_tokens: int | None = None,
        lora_request: object = None,
        tokenization_kwargs: dict[str, Any] | None = None,
    ) -> list[PoolingRequestOutput[PoolingOutput]]:
        """Per-token rewards (the ``token_classify`` task): ``.outputs.data`` is ``[tokens, labels]``."""
        truncate_prompt_tokens = vllm_extras(lora_request, tokenization_kwargs, truncate_prompt_tokens)
        io = self.task_io["reward"]
        return self._run_io(io, prompts, pooling_params, use_tqdm, truncate_prompt_tokens)

    def score(
        self: LLM,
        data_1: ScoreInputs,
        data_2: ScoreInputs,
        /,
        *,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        use_tqdm: bool = True,
        truncate_prompt_tokens: int | None = None,
        lora_request: object = None,
        tokenization_kwargs: dict[str, Any] | None = None,
    ) -> list[ScoringRequestOutput]:
        """Similarity scores of pairs (1:1, 1:N or N:N): ``.outputs.score``.

        ``pooling_params``: for every pair, or a list of one per pair.

        Cross-encoders (one label) score each pair jointly; models with only the ``embed``
        task fall back to the cosine similarity of the two embeddings.
        """
        truncate_prompt_tokens = vllm_extras(lora_request, tokenization_kwargs, truncate_prompt_tokens)
        prepared = self.task_io["score"].prepare(data_1, data_2, pooling_params, truncate_prompt_tokens)
        return self.run_prepared(prepared, use_tqdm)

    def encode_multi(
        self: LLM,
        prompts: Prompts,
        pooling_tasks: Sequence[str],
        pooling_params: dict[str, PoolingParams] | None = None,
        *,
        use_tqdm: bool = True,
        truncate_prompt_tokens: int | None = None,
    ) -> dict[str, list[PoolingRequestOutput[PoolingOutput]]]:
        """Several tasks from ONE forward pass (e.g. BGE-M3's dense, sparse and ColBERT outputs).

        Args:
            prompts: as for :meth:`encode`.
            pooling_tasks: tasks to return, e.g. ``["embed", "token_classify", "token_embed"]``.
            pooling_params: optional params per task, ``{task: PoolingParams}`` (one object
                per task, for every prompt). The tasks share one forward pass, so their
                ``truncate_prompt_tokens`` must agree (a task without params has ``None``);
                ``truncate_prompt_tokens`` the argument sets it for every task.

        Returns:
            ``{task: outputs in prompt order}``.

        Raises:
            TypeError: ``pooling_params`` is not a dict of ``PoolingParams``.
            ValueError: tasks whose ``truncate_prompt_tokens`` differ.
        """
        tasks = list(dict.fromkeys(pooling_tasks))
        if not tasks:
            raise ValueError("pooling_tasks must name at least one task")
        given = _params_per_task(pooling_params)
        unknown = set(given) - set(tasks)
        if unknown:
            raise ValueError(f"pooling_params given for tasks not asked for: {sorted(unknown)}")
        items = normalize_prompts(prompts)
        resolved = {}
        for task in tasks:
            check_attention_masks(items, task)
            pooler = self.poolers.get(task)
            resolved[task] = pooler.resolve(given.get(task) or PoolingParams(), truncate_prompt_tokens)
        _check_one_truncation({task: p.truncate_prompt_tokens for task, p in resolved.items()})
        per_task = {task: [p] * len(items) for task, p in resolved.items()}
        requests = self.input_processor(items, per_task[tasks[0]])
        return self._execute(requests, per_task, use_tqdm)

    def _run_plugin(
        self: LLM,
        data: object,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None,
        use_tqdm: bool,
        truncate_prompt_tokens: int | None = None,
    ) -> list[PoolingRequestOutput[Any]]:
        if self.io_processor is None:
            self.poolers.get("plugin")  # raises: no plugin loaded
        assert self.io_processor is not None
        prompts = self.io_processor.pre_process(data)
        task = self.io_processor.pooling_task
        outs = self._run(prompts, task, pooling_params, use_tqdm, truncate_prompt_tokens)
        results = self.io_processor.post_process(data, outs)
        return [_convert(o, r) for o, r in zip(outs, results)]


def vllm_extras(
    lora_request: object, tokenization_kwargs: dict[str, Any] | None, truncate_prompt_tokens: int | None
) -> int | None:
    """vLLM's ``lora_request`` (only ``None``: no adapters here) and ``tokenization_kwargs``
    (``max_length`` with ``truncation``: a cut, as ``truncate_prompt_tokens``); returns the cut.

    Raises:
        ValueError: a LoRA request, a tokenization keyword the engine does not follow, or a
            ``max_length`` that contradicts ``truncate_prompt_tokens``.
    """
    if lora_request is not None:
        raise ValueError("LoRA adapters are not supported: lora_request must be None")
    if tokenization_kwargs is None:
        return truncate_prompt_tokens
    if not isinstance(tokenization_kwargs, dict):
        raise TypeError(f"tokenization_kwargs must be a dict, got {type(tokenization_kwargs).__name__}")
    unknown = sorted(set(tokenization_kwargs) - {"truncation", "max_length"})
    if unknown:
        raise ValueError(
            f"tokenization_kwargs {unknown} are not supported (only 'truncation' and 'max_length'; "
            "use truncate_prompt_tokens)"
        )
    cut = tokenization_kwargs.get("max_length")
    if cut is None or tokenization_kwargs.get("truncation", True) is False:
        return truncate_prompt_tokens
    if truncate_prompt_tokens is not None and truncate_prompt_tokens != cut:
        raise ValueError(
            f"tokenization_kwargs max_length={cut} contradicts "
            f"truncate_prompt_tokens={truncate_prompt_tokens}"
        )
    return cut


def _params_per_task(pooling_params: object) -> dict[str, PoolingParams]:
    """``encode_multi``'s ``pooling_params``, checked: ``{task: PoolingParams}``."""
    if pooling_params is None:
        return {}
    if not isinstance(pooling_params, dict):
        raise TypeError(
            "pooling_params of encode_multi must be a dict {task: PoolingParams}, "
            f"got {type(pooling_params).__name__}"
        )
    for task, p in pooling_params.items():
        if p is not None and not isinstance(p, PoolingParams):
            raise TypeError(
                f"pooling_params[{task!r}] must be one PoolingParams (encode_multi applies it to "
                f"every prompt), got {type(p).__name__}"
            )
    return pooling_params


def _check_one_truncation(truncations: dict[str, int | None]) -> None:
    """The tasks of one forward pass cut prompts alike: refuse differing ``truncate_prompt_tokens``."""
    (first, value), *rest = truncations.items()
    for task, other in rest:
        if other != value:
            raise ValueError(
                f"encode_multi runs all tasks on one forward pass, but truncate_prompt_tokens differs: "
                f"{value} for {first!r} and {other} for {task!r}; give every task the same value "
                "(or pass truncate_prompt_tokens= to encode_multi)"
            )


def _convert(out: PoolingRequestOutput[Any], new: Any) -> PoolingRequestOutput[Any]:
    return PoolingRequestOutput(**out._with(new))
