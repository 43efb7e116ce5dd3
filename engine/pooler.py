"""Task poolers: a pooling method plus a head, one per supported task.

``TaskPoolers`` is the task-to-pooler map built once per model and checked at
construction; ``supported_tasks`` is what the model can do.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from vllm_pool.engine.activations import classify_activation, labels_activation, score_activation
from vllm_pool.engine.classifier import Classifier
from vllm_pool.engine.config import ModelConfig
from vllm_pool.engine.heads import ClassifyHead, EmbeddingHead, Projection
from vllm_pool.engine.methods import SEQUENCE_METHODS, all_pool, skip_instructions, step_pool
from vllm_pool.engine.params import PoolingParams, typed_key
from vllm_pool.engine.types import (
    ALL_POOLING_TASKS,
    HiddenStates,
    PoolingType,
    Request,
    UnsupportedTaskError,
)

logger = logging.getLogger(__name__)

RESOLVED_CACHE = 256
"""Resolved params a pooler keeps (distinct field values; beyond it, resolved each time)."""


class Head(Protocol):
    def resolve(self, params: PoolingParams) -> PoolingParams: ...

    def __call__(self, x: torch.Tensor, params: PoolingParams) -> torch.Tensor: ...


@dataclass
class Pooler:
    """Pools one task: ``method`` chooses tokens, ``head`` turns them into the output.

    Sequence methods (CLS / MEAN / LAST) give one ``[out]`` vector per request; token
    methods (ALL / STEP) give ``[tokens, out]`` per request. With ``include_instruction``
    off (Sentence Transformers' ``include_prompt: false``), sequence methods read each
    request's tokens after its instruction (``Request.instruction_len``), as ST's Pooling does.
    """

    task: str
    method: PoolingType
    head: Head
    include_instruction: bool = True
    strip_bos: int | None = None
    """Token methods: drop a request's first row when its token is this id (vLLM's BOSEOSFilter)."""
    strip_eos: int | None = None
    """Token methods: drop a request's last row when its token is this id."""
    _resolved: dict[tuple[Any, ...], PoolingParams] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def resolve(self, params: PoolingParams, truncate_prompt_tokens: int | None = None) -> PoolingParams:
        """Check the request's params for this task and fill in the model defaults
        (``truncate_prompt_tokens``: the call's own, over the params').

        Resolved params are kept by value (up to :data:`RESOLVED_CACHE` of them) and shared:
        a server resolves the same few params for every request, and nothing changes a
        resolved object.
        """
        key = (params.key(), typed_key(truncate_prompt_tokens))
        resolved = self._resolved.get(key)
        if resolved is None:
            if truncate_prompt_tokens is not None:
                params = params.clone(truncate_prompt_tokens=truncate_prompt_tokens)
            params.verify(self.task, pooling_type=self.method.value)
            resolved = self.head.resolve(params)
            if len(self._resolved) < RESOLVED_CACHE:
                self._resolved[key] = resolved
        return resolved

    def __call__(
        self, hidden: HiddenStates, requests: list[Request], params: list[PoolingParams] | None = None
    ) -> list[torch.Tensor]:
        """One output per request (``params`` overrides the requests' own params).

        Outputs are fp32 and stay on the model's device (the engine core copies a batch's
        outputs to the host in one transfer).
        """
        params = params if params is not None else [r.params for r in requests]
        if self.method in SEQUENCE_METHODS:
            if not self.include_instruction:
                hidden = skip_instructions(hidden, [r.instruction_len for r in requests])
            pooled = SEQUENCE_METHODS[self.method](hidden).float()  # [batch, hidden]; heads run in fp32
            if all(p == params[0] for p in params):
                return list(self.head(pooled, params[0]).float().unbind(0))
            return [self.head(row.unsqueeze(0), p)[0].float() for row, p in zip(pooled, params)]
        if self.method is PoolingType.STEP:
            per_request = step_pool(hidden, [p.step_tag_id for p in params])
        else:
            per_request = all_pool(hidden)
            if self.strip_bos is not None or self.strip_eos is not None:
                per_request = self._strip(per_request, [r.prompt_token_ids for r in requests])
        return [self.head(rows.float(), p).float() for rows, p in zip(per_request, params)]

    def _strip(self, per_request: list[torch.Tensor], token_ids: list[list[int]]) -> list[torch.Tensor]:
        """Each request's rows without a leading ``strip_bos`` / trailing ``strip_eos`` token."""
        out = []
        for rows, ids in zip(per_request, token_ids):
            start = 1 if ids and ids[0] == self.strip_bos else 0
            stop = len(ids) - 1 if len(ids) > start and ids[-1] == self.strip_eos else len(ids)
            out.append(rows[start:stop])
        return out


class TaskPoolers:
    """The poolers of one model, by task."""

    def __init__(self, model_name: str, poolers: dict[str, Pooler]) -> None:
        unknown = set(poolers) - set(ALL_POOLING_TASKS)
        if unknown:
            raise ValueError(f"Unknown pooling tasks {sorted(unknown)}")
        self.model_name = model_name
        self._poolers = poolers

    @property
    def supported_tasks(self) -> tuple[str, ...]:
        return tuple(t for t in ALL_POOLING_TASKS if t in self._poolers)

    def get(self, task: object) -> Pooler:
        if task not in self._poolers:
            supported = list(self.supported_tasks)
            if task not in ALL_POOLING_TASKS:
                raise ValueError(
                    f"Unknown pooling_task {task!r}; the pooling tasks are {list(ALL_POOLING_TASKS)} "
                    f"and model {self.model_name!r} supports {supported}"
                )
            detail = f"model {self.model_name!r} does not support the {task!r} task"
            raise UnsupportedTaskError(
                f"{unsupported_message(str(task), supported)} ({detail}; supported tasks: {supported})"
            )
        return self._poolers[task]


def unsupported_message(task: str, supported: list[str]) -> str:
    """vLLM's message for a task the model lacks (its tests match these texts)."""
    if task in ("embed", "token_embed"):
        return (
            "Embedding API is not supported by this model. Try converting the model using `--convert embed`."
        )
    if task in ("classify", "token_classify"):
        return (
            "Classification API is not supported by this model. "
            "Try converting the model using `--convert classify`."
        )
    if task == "score":
        if "classify" in supported:  # a classifier with num_labels != 1
            return "Score API is only enabled for num_labels == 1."
        return (
            "Score API is not supported by this model. "
            "Try converting the model using `--convert embed` or `--convert classify`."
        )
    if task == "plugin":
        return (
            "No IOProcessor plugin installed. Please refer to the documentation: load one with "
            "LLM(io_processor_plugin=...) or --io-processor-plugin."
        )
    return f"Unsupported task: {task!r} Supported tasks: {supported}"


def embed_poolers(cfg: ModelConfig) -> dict[str, Pooler]:
    """``embed`` (sequence methods only) and ``token_embed``: ST Dense projections (and a ColBERT
    checkpoint's linear head), Matryoshka slice and normalization on the pooled hidden states."""
    dense = list(cfg.st.dense) if cfg.st is not None else []
    if cfg.colbert is not None and cfg.colbert.projection is not None:
        dense.append(cfg.colbert.projection)  # a ColBERT checkpoint's linear head
    projection = Projection(dense).to(cfg.device, torch.float32) if dense else None  # fp32, as vLLM
    head = EmbeddingHead(
        model_name=cfg.name,
        hidden_size=cfg.hidden_size,
        projection=projection,
        normalize_default=cfg.default_normalize(),
        dimensions_default=cfg.pooler.dimensions,
        is_matryoshka=cfg.is_matryoshka,
        matryoshka_dimensions=cfg.matryoshka_dimensions,
    )
    method = PoolingType(cfg.default_pooling_type())
    poolers = {}
    if method in SEQUENCE_METHODS:
        poolers["embed"] = Pooler("embed", method, _sentence_head(cfg, head))
    token_method = PoolingType.STEP if method is PoolingType.STEP else PoolingType.ALL
    poolers["token_embed"] = Pooler("token_embed", token_method, head)
    return poolers


def _sentence_head(cfg: ModelConfig, head: EmbeddingHead) -> EmbeddingHead:
    """The ``embed`` head: ``head``, cut by default to a Sentence Transformers folder's saved
    ``truncate_dim`` as ``SentenceTransformer.encode`` does (``pooler_config`` dimensions and
    the request's win; ``token_embed`` outputs stay whole, as ST's token embeddings)."""
    cut = cfg.st.truncate_dim if cfg.st is not None else None
    if cut is None or cfg.pooler.dimensions is not None or cut >= head.out_dim:
        return head  # ST slices to at most the full size
    if cfg.matryoshka_dimensions and cut not in cfg.matryoshka_dimensions:
        logger.warning(
            "%s: truncate_dim=%d is not one of matryoshka_dimensions %s; embeddings stay whole",
            cfg.name, cut, cfg.matryoshka_dimensions,
        )  # fmt: skip
        return head
    sentence = copy.copy(head)
    sentence.dimensions_default = cut
    return sentence


def classify_poolers(cfg: ModelConfig, clf: Classifier) -> dict[str, Pooler]:
    """``classify`` (and ``score`` for one label) and ``token_classify`` over a classifier
    head split off the task model (``engine.classifier``), with the model's activation."""
    st_act = cfg.st.activation_fn if cfg.st is not None else None
    st_act = st_act or (getattr(cfg.hf_config, "sentence_transformers", None) or {}).get("activation_fn")
    st_act = st_act or getattr(cfg.hf_config, "sbert_ce_default_activation_function", None)  # ST < 4
    n = clf.num_labels
    use_act = True if cfg.pooler.use_activation is None else bool(cfg.pooler.use_activation)
    rest = (use_act, cfg.pooler.step_tag_id, cfg.pooler.returned_token_ids, n)
    # one activation per task, as vLLM's DispatchPooler.for_seq_cls
    head = ClassifyHead(clf.fn, classify_activation(cfg.hf_config, n), *rest)
    score_head = ClassifyHead(clf.fn, score_activation(st_act, n, cfg.trust_remote_code), *rest)
    token_fn = clf.fn if clf.token_fn is None else clf.per_token
    token_head = ClassifyHead(token_fn, labels_activation(n), *rest)
    poolers: dict[str, Pooler] = {}
    chosen = PoolingType(cfg.pooler.pooling_type) if cfg.pooler.pooling_type else clf.method
    if clf.method is not PoolingType.ALL:
        seq_method = chosen if chosen in SEQUENCE_METHODS else clf.method
        poolers["classify"] = Pooler("classify", seq_method, head)
        if clf.num_labels == 1:
            poolers["score"] = Pooler("score", seq_method, score_head)
    token_method = PoolingType.STEP if chosen is PoolingType.STEP else PoolingType.ALL
    poolers["token_classify"] = Pooler("token_classify", token_method, token_head)
    return poolers


def bge_m3_poolers(cfg: ModelConfig) -> dict[str, Pooler]:
    """BGE-M3's dense (CLS), ColBERT and sparse heads from the folder's ``*_linear.pt`` files."""
    from vllm_pool.engine import bge_m3

    dense = EmbeddingHead(model_name=cfg.name, hidden_size=cfg.hidden_size, normalize_default=True)
    sparse = bge_m3.load_linear(cfg.path / "sparse_linear.pt", cfg.device, torch.float32)
    colbert = bge_m3.load_linear(cfg.path / "colbert_linear.pt", cfg.device, torch.float32)
    bos = getattr(cfg.hf_config, "bos_token_id", None)
    eos = getattr(cfg.hf_config, "eos_token_id", None)
    # as vLLM: ColBERT vectors without the BOS token, sparse weights without BOS and EOS
    return {
        "embed": Pooler("embed", PoolingType.CLS, dense),
        "token_embed": Pooler("token_embed", PoolingType.ALL, bge_m3.ColbertHead(colbert), strip_bos=bos),
        "token_classify": Pooler(
            "token_classify", PoolingType.ALL, bge_m3.SparseHead(sparse), strip_bos=bos, strip_eos=eos
        ),
    }
