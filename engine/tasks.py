"""The task methods of :class:`~vllm_pool.engine.llm.LLM`: thin wrappers over its core verb.

``encode``, ``embed``, ``classify``, ``reward``, ``score`` and ``encode_multi`` hand their
inputs to the task's IO processor (``engine.task_io``, shared with the server), which checks
them, pairs them (``score``) and shapes the pooled tensors into the spec's output objects;
``LLM._run_io`` / ``run_prepared`` / ``_execute`` run them through the engine core.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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
    from vllm_pool.engine.llm import LLM


class TaskMethods:
    """Mixed into :class:`~vllm_pool.engine.llm.LLM`."""

    def encode(
        self: LLM,
        prompts: object,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        *,
        pooling_task: str | None = None,
        use_tqdm: bool = True,
        truncate_prompt_tokens: int | None = None,
    ) -> list[PoolingRequestOutput[PoolingOutput]]:
        """Raw pooled tensors (``.outputs.data``) for any task the model supports.

        With ``pooling_task="plugin"`` the loaded IO processor plugin pre-processes
        ``prompts`` and post-processes the outputs (``.outputs`` is then the plugin's result).
        """
        if pooling_task == "plugin":
            return self._run_plugin(prompts, pooling_params, use_tqdm)
        if pooling_task is None:
            supported = list(self.get_supported_tasks())
            raise ValueError(f"{ENCODE_TASK_REQUIRED} (this model supports {supported})")
        return self._run(prompts, pooling_task, pooling_params, use_tqdm, truncate_prompt_tokens)

    def embed(
        self: LLM,
        prompts: object,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        *,
        use_tqdm: bool = True,
        truncate_prompt_tokens: int | None = None,
    ) -> list[EmbeddingRequestOutput]:
        """One embedding vector per prompt (``.outputs.embedding``)."""
        io = self.task_io["embed"]
        return self._run_io(io, prompts, pooling_params, use_tqdm, truncate_prompt_tokens)

    def classify(
        self: LLM,
        prompts: object,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        *,
        use_tqdm: bool = True,
        truncate_prompt_tokens: int | None = None,
    ) -> list[ClassificationRequestOutput]:
        """Class probabilities per prompt (``.outputs.probs``; logits with ``use_activation=False``)."""
        io = self.task_io["classify"]
        return self._run_io(io, prompts, pooling_params, use_tqdm, truncate_prompt_tokens)

    def reward(
        self: LLM,
        prompts: object,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        *,
        use_tqdm: bool = True,
        truncate_prompt_tokens: int | None = None,
    ) -> list[PoolingRequestOutput[PoolingOutput]]:
        """Per-token rewards (the ``token_classify`` task): ``.outputs.data`` is ``[tokens, labels]``."""
        io = self.task_io["reward"]
        return self._run_io(io, prompts, pooling_params, use_tqdm, truncate_prompt_tokens)

    def score(
        self: LLM,
        data_1: str | Sequence[str],
        data_2: str | Sequence[str],
        /,
        *,
        pooling_params: PoolingParams | None = None,
        use_tqdm: bool = True,
        truncate_prompt_tokens: int | None = None,
    ) -> list[ScoringRequestOutput]:
        """Similarity scores of pairs (1:1, 1:N or N:N): ``.outputs.score``.

        Cross-encoders (one label) score each pair jointly; models with only the ``embed``
        task fall back to the cosine similarity of the two embeddings.
        """
        prepared = self.task_io["score"].prepare(data_1, data_2, pooling_params, truncate_prompt_tokens)
        return self.run_prepared(prepared, use_tqdm)

    def encode_multi(
        self: LLM,
        prompts: object,
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
            pooling_params: optional params per task.

        Returns:
            ``{task: outputs in prompt order}``.
        """
        tasks = list(dict.fromkeys(pooling_tasks))
        if not tasks:
            raise ValueError("pooling_tasks must name at least one task")
        given = pooling_params or {}
        unknown = set(given) - set(tasks)
        if unknown:
            raise ValueError(f"pooling_params given for tasks not asked for: {sorted(unknown)}")
        items = normalize_prompts(prompts)
        per_task = {}
        for task in tasks:
            check_attention_masks(items, task)
            pooler = self.poolers.get(task)
            p = given.get(task) or PoolingParams()
            per_task[task] = [pooler.resolve(p, truncate_prompt_tokens)] * len(items)
        requests = self.input_processor(items, per_task[tasks[0]])
        return self._execute(requests, per_task, use_tqdm)

    def _run_plugin(
        self: LLM,
        data: object,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None,
        use_tqdm: bool,
    ) -> list[PoolingRequestOutput[Any]]:
        if self.io_processor is None:
            self.poolers.get("plugin")  # raises: no plugin loaded
        assert self.io_processor is not None
        prompts = self.io_processor.pre_process(data)
        outs = self._run(prompts, self.io_processor.pooling_task, pooling_params, use_tqdm)
        results = self.io_processor.post_process(data, outs)
        return [_convert(o, r) for o, r in zip(outs, results)]


def _convert(out: PoolingRequestOutput[Any], new: Any) -> PoolingRequestOutput[Any]:
    return PoolingRequestOutput(**out._with(new))
