"""The loader: options in, a loaded model out (config, tokenizer, weights, architecture entry).

Reads top to bottom: find the folder, read its Sentence Transformers and transformers
configs, load the tokenizer, settle the :class:`~vllm_pool.engine.config.ModelConfig`, pick
the architecture entry (``engine.architectures``), and load the weights with the entry's
auto class. Nothing here runs the model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
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


# Files a tokenizer is read from (any one is enough): the fast tokenizer, a tokenizer config (it
# names the class; some tokenizers, ByT5's, need no vocabulary file), and the vocabulary files of
# WordPiece, BPE, SentencePiece and Unigram tokenizers.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "*.model",
    "*.spm",
    "*.tiktoken",
)


def _tokenizer_files(folder: Path) -> list[Path]:
    return [f for pattern in TOKENIZER_FILES for f in folder.glob(pattern) if f.is_file()]


def load_tokenizer(path: Any, trust_remote_code: bool) -> Any:
    """Load the tokenizer of the model folder ``path``.

    Raises:
        ModelNotFoundError: the folder has none of :data:`TOKENIZER_FILES`, or what it has gives
            a tokenizer with no vocabulary beyond its special tokens (transformers then builds a
            default tokenizer that reads every word as the unknown token).
    """
    from transformers import AutoTokenizer

    folder = Path(path)
    looked_for = ", ".join(TOKENIZER_FILES)
    if folder.is_dir() and not _tokenizer_files(folder):
        raise ModelNotFoundError(
            f"No tokenizer in model folder {folder}: none of {looked_for} (the tokenizer must be "
            "saved with the model, e.g. tokenizer.save_pretrained(folder))"
        )
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    try:
        only_specials = len(tokenizer) <= len(set(tokenizer.all_special_ids))
    except (AttributeError, NotImplementedError, TypeError):  # a remote-code tokenizer without them
        only_specials = False
    if only_specials:
        found = ", ".join(sorted(f.name for f in _tokenizer_files(folder)))
        raise ModelNotFoundError(
            f"The tokenizer of model folder {folder} has no vocabulary ({len(tokenizer)} special "
            f"tokens only): its tokenizer files ({found}) lack a vocabulary; looked for {looked_for}"
        )
    return tokenizer


def attention_implementation(cfg: ModelConfig) -> str:
    """SDPA, except half precision on the CPU: there PyTorch's CPU flash kernel is slower than
    transformers' eager attention (batched matmuls, softmax) on short sequences."""
    half = cfg.dtype in (torch.bfloat16, torch.float16)
    return "eager" if half and cfg.device.type == "cpu" else "sdpa"


def load_weights(cfg: ModelConfig, auto_class: str, backbone: Callable | None = None) -> torch.nn.Module:
    """Load the checkpoint of ``cfg`` with the transformers class ``auto_class``; raise if it lacks
    weights that the engine runs (``backbone`` picks the part an embedding model runs)."""
    import transformers

    auto = getattr(transformers, auto_class)
    kwargs: dict[str, Any] = dict(
        config=cfg.hf_config, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code
    )
    try:
        try:
            attention = attention_implementation(cfg)
            model, info = auto.from_pretrained(
                cfg.hf_path, attn_implementation=attention, output_loading_info=True, **kwargs
            )
        except (ValueError, ImportError) as e:
            if "sdpa" not in str(e).lower() and "attention" not in str(e).lower():
                raise
            model, info = auto.from_pretrained(
                cfg.hf_path, attn_implementation="eager", output_loading_info=True, **kwargs
            )
    except OSError as e:
        raise ModelNotFoundError(
            f"Could not load the weights of model {cfg.name!r} from {cfg.hf_path}: {e}"
        ) from e
    missing = info.get("missing_keys") or ()
    check_missing_weights(cfg, model, missing, _unused_weights(cfg, model, backbone))
    return model.to(cfg.device).eval().requires_grad_(False)


def _unused_weights(cfg: ModelConfig, model: torch.nn.Module, backbone: Callable | None) -> Callable:
    """A test for the weights of ``model`` that the engine never runs.

    A classifier (``convert="classify"``) runs the model's heads, so every weight counts. An
    embedding model runs only its backbone and pools the last hidden states itself: a head
    outside the backbone (an ``AutoModelForMaskedLM`` entry's LM head) and the backbone's own
    pooler may be missing from the checkpoint.
    """
    if cfg.convert == "classify":
        return lambda key: False
    part = backbone(model) if backbone is not None else model
    name = next((n for n, m in model.named_modules() if m is part), "")
    prefix = f"{name}." if name else ""
    return lambda key: not key.startswith(prefix) or key.startswith(f"{prefix}pooler.")


def check_missing_weights(cfg: ModelConfig, model: torch.nn.Module, missing: Any, unused: Callable) -> None:
    """Raise if the checkpoint lacks weights of ``model`` that the engine runs.

    ``missing`` is transformers' ``missing_keys``: the weights it newly (randomly) initialized,
    already without tied weights and the keys a model declares optional.
    """
    ignored = sorted(k for k in missing if unused(k))
    if ignored:
        logger.info("%s: weights the engine does not run are not in the checkpoint: %s", cfg.name, ignored)
    keys = sorted(k for k in missing if not unused(k))
    if not keys:
        return
    shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    message = (
        f"The checkpoint in {cfg.hf_path} has no weights for {len(keys)} parameter(s) of "
        f"{type(model).__name__} ({shown}); transformers would initialize them randomly, so the "
        f"outputs would change on every load."
    )
    if cfg.convert == "classify":
        message += (
            " The checkpoint has no such classification head: load a *ForSequenceClassification "
            "(or *ForTokenClassification) checkpoint, or, for a causal LM, name the head with "
            "hf_overrides (architectures [...ForCausalLM] with the checkpoint's score.weight, or "
            "classifier_from_token) as the README's conversion rules describe."
        )
    raise ValueError(message)


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
    return LoadedModel(cfg, tokenizer, load_weights(cfg, entry.auto_class, entry.backbone), entry)


def uses_segments(hf_config: Any, tokenizer: Any) -> bool:
    """Whether requests carry segment ids (``token_type_ids``): the model has more than one
    segment type and its tokenizer returns them (what transformers, Sentence Transformers and
    vLLM feed the model; a tokenizer without them gives the model zeros)."""
    if int(getattr(hf_config, "type_vocab_size", 1) or 1) <= 1:
        return False
    return "token_type_ids" in (getattr(tokenizer, "model_input_names", None) or ["token_type_ids"])
