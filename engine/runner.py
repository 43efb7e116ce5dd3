"""The model runner: turns a batch into flat hidden states (loading is ``engine.loader``'s)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from vllm_pool.engine import cpu_linear, packing
from vllm_pool.engine.config import ModelConfig
from vllm_pool.engine.params import PoolingParams
from vllm_pool.engine.types import Batch, HiddenStates, Request

logger = logging.getLogger(__name__)
_PROBE = PoolingParams()


@dataclass
class Staged:
    """A batch whose inputs are built on the host and on their way to the device.

    ``inputs`` are the model's tensors, ``extra`` its other keyword arguments (packed
    batches: segment bounds), ``rows`` the flat positions of the real tokens (padded
    batches), ``cu_seqlens`` the request bounds, and ``ready`` the CUDA event of the copy.
    """

    batch: Batch
    inputs: dict[str, torch.Tensor]
    extra: dict[str, Any]
    rows: torch.Tensor | None
    cu_seqlens: torch.Tensor
    ready: Any = None


class ModelRunner:
    """Runs batches through the transformer, packed (one row, no padding) or padded.

    Args:
        cfg: the model configuration.
        model: the loaded backbone (hidden states only; the poolers own the task heads).
        compile: compile the transformer with ``torch.compile`` (see :meth:`compile`).
        packed: run packed variable-length batches (see ``engine.packing``). ``None``:
            ``packing.default_on`` (the CPU in fp32 / bf16, CUDA in half precision), not
            compiled, for architectures that support it (others run padded, logged at debug).
        prepack: on the CPU, prepack the linears for oneDNN (``engine.cpu_linear``); the
            engine does for the models it loads (not when compiling).
    """

    def __init__(
        self,
        cfg: ModelConfig,
        model: torch.nn.Module,
        compile: bool = False,
        packed: bool | None = None,
        prepack: bool = False,
    ) -> None:
        self.cfg = cfg
        self.model = model
        self.device = cfg.device
        pad = getattr(cfg.hf_config, "pad_token_id", None)
        self.pad_token_id = int(pad) if isinstance(pad, int) else 0
        self._decoder = not cfg.is_encoder
        self._copy_stream: Any = None
        self.packed = False
        self.fill_rows = False  # see packing.fills_rows
        self.compiled = False
        self.on_oom: Callable[[int], None] | None = None  # told the tokens of a batch that did not fit
        self._pos_offset = 0
        if prepack and self.device.type == "cpu" and not compile:
            n = cpu_linear.prepack(self.model, batch_hint=2048)
            logger.debug("Prepacked %d linear layers for oneDNN", n)
        asked = packed is True
        if packed is None:  # the default: where measured faster (packing.default_on)
            packed = not compile and packing.default_on(cfg.dtype, self.device)
        if packed:
            self._enable_packing(asked)
        # packed rows filled up to a few lengths where kernels are built per shape
        self.fill_rows = self.packed and packing.fills_rows(cfg.dtype, self.device)
        if compile:
            self.compile()

    def compile(self) -> None:
        """``torch.compile`` the transformer (inductor, dynamic shapes, frozen weights).

        Fuses the elementwise work (bias, GELU, residual adds, LayerNorm) into the GEMMs.
        The first batches of each new shape class compile (tens of seconds on a CPU).
        """
        self.model = torch.compile(self.model, dynamic=True)
        self.compiled = True

    def _call_model(self, **inputs: Any) -> Any:
        if self._decoder:
            inputs["use_cache"] = False
        if not self.compiled:
            out = self.model(**inputs)
        else:
            import torch._inductor.config as inductor_config

            with inductor_config.patch(freezing=True):
                out = self.model(**inputs)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    def _enable_packing(self, asked: bool) -> None:
        """Switch to packed batches if the architecture supports them and a probe agrees.

        The probe runs a few short prompts padded and packed; packing stays off if the
        outputs differ, e.g. for a model that derives positions itself. Warnings only when
        ``asked`` (``packed=True``); a default that does not apply is logged at debug / info.
        """
        if not packing.supports_packing(self.model, self.cfg.max_model_len):
            log = logger.warning if asked else logger.debug
            log("%s does not support packed batches (or attends through a sliding window); running padded",
                type(self.model).__name__)  # fmt: skip
            return
        self._pos_offset = packing.position_offset(self.model)
        vocab = int(getattr(self.cfg.hf_config, "vocab_size", 1000) or 1000)
        lengths = (9, 4, 4, 6)  # two equal lengths: the grouped path runs too
        # ids past the usual special tokens (pad / cls / sep / unk sit at the start of vocabularies)
        ids = [[5 + (7 * j + 3 * i) % max(vocab - 5, 1) for j in range(n)] for i, n in enumerate(lengths)]
        probe = Batch([Request(index=i, prompt_token_ids=t, params=_PROBE) for i, t in enumerate(ids)])
        padded = self.forward(probe).data.float()
        previous = packing.use_packed_attention(self.model)
        self.packed = True
        try:
            got = self.forward(probe).data.float()
        except Exception as e:  # e.g. a flash kernel that rejects this head size or GPU
            packing.restore_attention(self.model, previous)
            self.packed = False
            log = logger.warning if asked or self.device.type == "cuda" else logger.info
            log("Packed batches failed (%s: %s); running padded", type(e).__name__, e)
            return
        cosine = torch.nn.functional.cosine_similarity(got, padded, dim=-1).min().item()
        if cosine < (0.99999 if self.cfg.dtype == torch.float32 else 0.999):
            packing.restore_attention(self.model, previous)
            self.packed = False
            log = logger.warning if asked or self.device.type == "cuda" else logger.info
            log("Packed batches disagree with padded ones (cosine %.5f); running padded", cosine)

    # ------------------------------------------------------------------ host -> device
    def _to_device(self, host: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Any]:
        """Copy host tensors to the device: pinned, non-blocking, on a side stream on CUDA."""
        if self.device.type != "cuda":
            return {k: v.to(self.device) for k, v in host.items()}, None
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(self._copy_stream):
            dev = {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in host.items()}
            ready = torch.cuda.Event()
            ready.record(self._copy_stream)
        return dev, ready

    def stage(self, batch: Batch) -> Staged:
        """Build ``batch``'s inputs on the host and start their copy to the device."""
        reqs = batch.requests
        bounds = [0]
        for r in reqs:
            bounds.append(bounds[-1] + r.num_tokens)
        masked = any(r.attention_mask is not None for r in reqs)  # positions not attended to
        if self.packed:
            ids, types = [r.prompt_token_ids for r in reqs], [r.token_type_ids for r in reqs]
            masks = [r.attention_mask or [1] * r.num_tokens for r in reqs] if masked else []
            segments = bounds
            fillers: list[int] = []
            if self.fill_rows:
                fillers = packing.fillers(bounds[-1], batch.budget, self.cfg.max_model_len)
            if fillers:  # segments of their own (each attends to itself only), cut off after the model
                ids, types = ids + [[self.pad_token_id] * f for f in fillers], types + [None] * len(fillers)
                masks = masks + [[1] * f for f in fillers]
                segments = bounds + list(itertools.accumulate(fillers, initial=bounds[-1]))[1:]
            host = packing.pack(ids, types, self._pos_offset)
            extra = packing.attention_kwargs(segments, max([batch.max_len, *fillers]))
            if masked:
                keys, extra["max_length_k"] = packing.key_mask(masks)
                host.update(keys)
            if fillers:
                host["cu_seq_lens_q"] = torch.tensor(segments)
        else:
            max_len = batch.max_len
            pads = [max_len - r.num_tokens for r in reqs]
            host = {
                "input_ids": torch.tensor(
                    [r.prompt_token_ids + [self.pad_token_id] * p for r, p in zip(reqs, pads)]
                )
            }
            if any(pads) or masked:  # equal lengths: no mask, faster kernels
                host["attention_mask"] = torch.tensor(
                    [(r.attention_mask or [1] * r.num_tokens) + [0] * p for r, p in zip(reqs, pads)]
                )
            if any(r.token_type_ids is not None for r in reqs):
                host["token_type_ids"] = torch.tensor(
                    [(r.token_type_ids or [0] * r.num_tokens) + [0] * p for r, p in zip(reqs, pads)]
                )
            starts = [i * max_len for i in range(len(reqs))]
            host["rows"] = torch.cat([torch.arange(a, a + r.num_tokens) for a, r in zip(starts, reqs)])
            extra = {}
        host["cu_seqlens"] = torch.tensor(bounds)
        dev, ready = self._to_device(host)
        rows, cu = dev.pop("rows", None), dev.pop("cu_seqlens")
        if self.packed:
            cu_q = dev.pop("cu_seq_lens_q", cu)
            extra.update(cu_seq_lens_q=cu_q, cu_seq_lens_k=dev.pop("cu_seq_lens_k", cu_q))
            for name in ("packed_key_mask", "packed_key_index"):  # prompts with unattended positions
                if name in dev:
                    extra[name] = dev.pop(name)
        return Staged(batch, dev, extra, rows, cu, ready)

    # ------------------------------------------------------------------ forward
    @torch.inference_mode()
    def forward(self, batch: Batch | Staged) -> HiddenStates:
        """Run a batch; return its hidden states unpadded, in the batch's request order."""
        staged = batch if isinstance(batch, Staged) else self.stage(batch)
        if staged.ready is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(staged.ready)
            # every tensor copied on the side stream is read here: none may be reused early
            for t in (*staged.inputs.values(), *staged.extra.values(), staged.cu_seqlens, staged.rows):
                if isinstance(t, torch.Tensor):
                    t.record_stream(stream)
        hidden = self._call_model(**staged.inputs, **staged.extra)
        ids, cu = staged.inputs["input_ids"], staged.cu_seqlens
        lengths = [r.num_tokens for r in staged.batch.requests]
        if staged.rows is None:  # packed: already flat (a filled row: its prompts' tokens first)
            n = sum(lengths)
            return HiddenStates(data=hidden[0, :n], cu_seqlens=cu, token_ids=ids[0, :n], lengths=lengths)
        data = hidden.flatten(0, 1).index_select(0, staged.rows)
        return HiddenStates(data=data, cu_seqlens=cu, token_ids=ids.flatten()[staged.rows], lengths=lengths)

    def forward_split(self, batch: Batch | Staged) -> Iterator[tuple[Batch, HiddenStates]]:
        """Run ``batch``; on a device out-of-memory error, split it in halves and retry.

        Yields ``(sub_batch, hidden_states)`` pairs that together cover ``batch``. A single
        request that does not fit raises a ``MemoryError`` naming its length.
        """
        plain = batch.batch if isinstance(batch, Staged) else batch
        try:
            hidden = self.forward(batch)
        except torch.OutOfMemoryError as e:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(plain.requests) == 1:
                raise MemoryError(
                    f"One prompt of {plain.max_len} tokens does not fit in device memory; "
                    "lower max_model_len or truncate_prompt_tokens"
                ) from e
            half = len(plain.requests) // 2
            logger.warning("Out of memory on a batch of %d prompts; splitting it", len(plain.requests))
            if self.on_oom is not None:
                lengths = [r.num_tokens for r in plain.requests]
                self.on_oom(sum(lengths) if self.packed else max(lengths) * len(lengths))
            yield from self.forward_split(Batch(plain.requests[:half], plain.budget))
            yield from self.forward_split(Batch(plain.requests[half:], plain.budget))
            return
        yield plain, hidden


def token_budget_for_memory(
    free_bytes: int, cfg: ModelConfig, fraction: float = 0.3, packed: bool = False
) -> int:
    """A token budget whose activations fit in ``fraction`` of ``free_bytes`` (GPU sizing).

    Counts, per token and per live layer, the hidden states, the FFN intermediate and (for
    padded batches, whose attention may materialize them) the attention scores of a
    ``max_model_len`` row, in the model's dtype. Packed batches run Flash Attention, whose
    memory grows with the tokens only.
    """
    hc = cfg.hf_config
    hidden = int(getattr(hc, "hidden_size", 1024))
    inter = int(getattr(hc, "intermediate_size", 4 * hidden) or 4 * hidden)
    heads = int(getattr(hc, "num_attention_heads", 16) or 16)
    elem = torch.finfo(cfg.dtype).bits // 8
    scores = 0 if packed else heads * cfg.max_model_len
    per_token = elem * (8 * hidden + 2 * inter + scores)
    budget = int(free_bytes * fraction) // max(per_token, 1)
    budget = max(cfg.max_model_len, min(budget, 262_144))
    return budget // 256 * 256 or cfg.max_model_len
