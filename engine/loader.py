"""The loader: options in, a loaded model out (config, tokenizer, weights, architecture entry).

Reads top to bottom: find the folder, read its Sentence Transformers and transformers
configs, load the tokenizer, settle the :class:`~vllm_pool.engine.config.ModelConfig`, pick
the architecture entry (``engine.architectures``), and load the weights with the entry's
auto class. Nothing here runs the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from vllm_pool.engine.architectures import Architecture, resolve
from vllm_pool.engine.args import EngineArgs
from vllm_pool.engine.config import ModelConfig, build_model_config, load_hf_config
from vllm_pool.engine.model_source import resolve_model
from vllm_pool.engine.st_config import load_st_config
from vllm_pool.engine.types import ModelNotFoundError

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """What :func:`load_model` returns.

    Attributes:
        config: every setting the engine decided.
        tokenizer: the Hugging Face tokenizer.
        model: the loaded task model (heads included), on its device, in eval mode.
        architecture: the registry entry that builds its poolers and names its backbone.
    """

    config: ModelConfig
    tokenizer: Any
    model: torch.nn.Module
    architecture: Architecture

    @property
    def backbone(self) -> torch.nn.Module:
        """The part of the model the runner runs (hidden states only)."""
        return self.architecture.backbone(self.model)


def load_tokenizer(path: Any, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def attention_implementation(cfg: ModelConfig) -> str:
    """SDPA, except half precision on the CPU: there PyTorch's CPU flash kernel is slower than
    transformers' eager attention (batched matmuls, softmax) on short sequences."""
    half = cfg.dtype in (torch.bfloat16, torch.float16)
    return "eager" if half and cfg.device.type == "cpu" else "sdpa"


def load_weights(cfg: ModelConfig, auto_class: str) -> torch.nn.Module:
    """Load the checkpoint of ``cfg`` with the transformers class ``auto_class``."""
    import transformers

    auto = getattr(transformers, auto_class)
    kwargs: dict[str, Any] = dict(
        config=cfg.hf_config, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code
    )
    try:
        try:
            attention = attention_implementation(cfg)
            model = auto.from_pretrained(cfg.hf_path, attn_implementation=attention, **kwargs)
        except (ValueError, ImportError) as e:
            if "sdpa" not in str(e).lower() and "attention" not in str(e).lower():
                raise
            model = auto.from_pretrained(cfg.hf_path, attn_implementation="eager", **kwargs)
    except OSError as e:
        raise ModelNotFoundError(
            f"Could not load the weights of model {cfg.name!r} from {cfg.hf_path}: {e}"
        ) from e
    return model.to(cfg.device).eval().requires_grad_(False)


def load_model(args: EngineArgs) -> LoadedModel:
    """Load the model that ``args`` names: config, tokenizer, weights and architecture entry."""
    path = resolve_model(args.model, revision=args.revision)
    st = load_st_config(path)
    hf_path = path / st.transformer_path if st is not None and st.transformer_path else path
    hf_config = load_hf_config(hf_path, args.trust_remote_code, args.hf_overrides)
    tokenizer = load_tokenizer(hf_path, args.trust_remote_code)
    cfg = build_model_config(args, path, hf_path, hf_config, st, getattr(tokenizer, "model_max_length", None))
    entry = resolve(cfg)
    logger.debug("Architecture entry %r loads %s with %s", entry.name, cfg.architectures, entry.auto_class)
    return LoadedModel(cfg, tokenizer, load_weights(cfg, entry.auto_class), entry)
