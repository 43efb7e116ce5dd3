"""The model runner: loads the transformer and turns a batch into flat hidden states."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
from vllm_pool.engine.classifier import is_token_classification
from vllm_pool.engine.config import ModelConfig
from vllm_pool.engine.types import Batch, HiddenStates, ModelNotFoundError

logger = logging.getLogger(__name__)


def _auto_class(cfg: ModelConfig) -> Any:
    """The transformers auto class that loads the checkpoint with the head the task needs."""
    import transformers

    if cfg.convert != "classify":
        return transformers.AutoModel
    archs = cfg.architectures
    if getattr(cfg.hf_config, "classifier_from_token", None) or any(a.endswith("ForCausalLM") for a in archs):
        return transformers.AutoModelForCausalLM
    if is_token_classification(archs):
        return transformers.AutoModelForTokenClassification
    return transformers.AutoModelForSequenceClassification


def load_transformer(cfg: ModelConfig) -> torch.nn.Module:
    """Load the model of ``cfg`` from its folder: the base model, or the task model for classify."""
    auto = _auto_class(cfg)
    kwargs: dict[str, Any] = dict(
        config=cfg.hf_config, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code
    )
    try:
        try:
            model = auto.from_pretrained(cfg.hf_path, attn_implementation="sdpa", **kwargs)
        except (ValueError, ImportError) as e:
            if "sdpa" not in str(e).lower() and "attention" not in str(e).lower():
                raise
            model = auto.from_pretrained(cfg.hf_path, attn_implementation="eager", **kwargs)
    except OSError as e:
        raise ModelNotFoundError(
            f"Could not load the weights of model {cfg.name!r} from {cfg.hf_path}: {e}"
        ) from e
    return model.to(cfg.device).eval().requires_grad_(False)


class ModelRunner:
    """Runs padded batches through the transformer.

    Args:
        cfg: the model configuration.
        model: an already loaded transformer (tests pass fakes); loaded from ``cfg`` if None.
        compile: compile the transformer with ``torch.compile`` (see :meth:`compile`).
    """

    def __init__(self, cfg: ModelConfig, model: torch.nn.Module | None = None, compile: bool = False) -> None:
        self.cfg = cfg
        self.task_model = model if model is not None else load_transformer(cfg)
        # the runner computes hidden states only; task heads are split off by the poolers
        self.model = self.task_model.base_model if cfg.convert == "classify" else self.task_model
        self.device = cfg.device
        pad = getattr(cfg.hf_config, "pad_token_id", None)
        self.pad_token_id = int(pad) if isinstance(pad, int) else 0
        self._decoder = not cfg.is_encoder
        self.compiled = False
        if compile:
            self.compile()

    def compile(self) -> None:
        """``torch.compile`` the transformer (inductor, dynamic shapes, frozen weights).

        Fuses the elementwise work (bias, GELU, residual adds, LayerNorm) into the GEMMs.
        The first batches of each new shape class compile (tens of seconds on a CPU).
        """
        self.model = torch.compile(self.model, dynamic=True)
        self.compiled = True

    def _call_model(self, **inputs: torch.Tensor) -> Any:
        if not self.compiled:
            return self.model(**inputs)
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True):
            return self.model(**inputs)

    def _inputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids`` / ``attention_mask`` (and ``token_type_ids`` for pairs)."""
        reqs, max_len = batch.requests, batch.max_len
        pads = [max_len - r.num_tokens for r in reqs]
        inputs = {
            "input_ids": torch.tensor(
                [r.prompt_token_ids + [self.pad_token_id] * p for r, p in zip(reqs, pads)]
            ),
            "attention_mask": torch.tensor([[1] * r.num_tokens + [0] * p for r, p in zip(reqs, pads)]),
        }
        if any(r.token_type_ids is not None for r in reqs):
            inputs["token_type_ids"] = torch.tensor(
                [(r.token_type_ids or [0] * r.num_tokens) + [0] * p for r, p in zip(reqs, pads)]
            )
        pin = self.device.type == "cuda"
        return {
            k: (v.pin_memory() if pin else v).to(self.device, non_blocking=pin) for k, v in inputs.items()
        }

    @torch.inference_mode()
    def forward(self, batch: Batch) -> HiddenStates:
        """Run ``batch``; return its hidden states unpadded, in the batch's request order."""
        inputs = self._inputs(batch)
        mask = inputs["attention_mask"]
        call = dict(inputs)
        if bool(mask.all()):
            call.pop("attention_mask")  # equal lengths: no masking needed, faster kernels
        if self._decoder:
            call["use_cache"] = False
        out = self._call_model(**call)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        keep = mask.bool()
        lens = mask.sum(dim=1)
        cu = torch.zeros(len(lens) + 1, dtype=torch.long, device=lens.device)
        cu[1:] = torch.cumsum(lens, dim=0)
        return HiddenStates(data=hidden[keep], cu_seqlens=cu, token_ids=inputs["input_ids"][keep])

    def forward_split(self, batch: Batch) -> Iterator[tuple[Batch, HiddenStates]]:
        """Run ``batch``; on a device out-of-memory error, split it in halves and retry.

        Yields ``(sub_batch, hidden_states)`` pairs that together cover ``batch``. A single
        request that does not fit raises a ``MemoryError`` naming its length.
        """
        try:
            hidden = self.forward(batch)
        except torch.OutOfMemoryError as e:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(batch.requests) == 1:
                raise MemoryError(
                    f"One prompt of {batch.max_len} tokens does not fit in device memory; "
                    "lower max_model_len or truncate_prompt_tokens"
                ) from e
            half = len(batch.requests) // 2
            logger.warning("Out of memory on a batch of %d prompts; splitting it", len(batch.requests))
            yield from self.forward_split(Batch(batch.requests[:half]))
            yield from self.forward_split(Batch(batch.requests[half:]))
            return
        yield batch, hidden


def token_budget_for_memory(free_bytes: int, cfg: ModelConfig, fraction: float = 0.3) -> int:
    """A token budget whose activations fit in ``fraction`` of ``free_bytes`` (GPU sizing).

    Counts, per token and per live layer, the hidden states, the FFN intermediate and the
    attention scores of a ``max_model_len`` row, in the model's dtype.
    """
    hc = cfg.hf_config
    hidden = int(getattr(hc, "hidden_size", 1024))
    inter = int(getattr(hc, "intermediate_size", 4 * hidden) or 4 * hidden)
    heads = int(getattr(hc, "num_attention_heads", 16) or 16)
    elem = torch.finfo(cfg.dtype).bits // 8
    per_token = elem * (8 * hidden + 2 * inter + heads * cfg.max_model_len)
    budget = int(free_bytes * fraction) // max(per_token, 1)
    budget = max(cfg.max_model_len, min(budget, 262_144))
    return budget // 256 * 256 or cfg.max_model_len
