"""Model configuration: what to load, how to pool it, and its limits.

Priority of pooling settings, as in the spec: the model's own defaults < the Sentence
Transformers folder (``modules.json``) < ``pooler_config``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from vllm_pool.engine import cpu_linear
from vllm_pool.engine.args import DTYPES
from vllm_pool.engine.colbert_checkpoint import ColbertCheckpoint, read_colbert_checkpoint
from vllm_pool.engine.st_config import STConfig
from vllm_pool.engine.types import PoolingType

if TYPE_CHECKING:
    from vllm_pool.engine.args import EngineArgs

logger = logging.getLogger(__name__)

# Encoder-only model types: bidirectional, CLS is their native sentence pooling.
ENCODER_MODEL_TYPES = frozenset(
    {
        "bert", "roberta", "xlm-roberta", "distilbert", "electra", "deberta", "deberta-v2",
        "modernbert", "mpnet", "camembert", "albert", "ernie", "nomic_bert", "new",
        "xlm-roberta-xl", "megatron-bert", "mobilebert", "eurobert",
    }
)  # fmt: skip


@dataclass
class PoolerConfig:
    """Overrides of the pooler's defaults (``LLM(pooler_config=...)``).

    Args:
        pooling_type: ``CLS``, ``MEAN``, ``LAST``, ``ALL`` or ``STEP``.
        normalize: L2-normalize ``embed`` / ``token_embed`` outputs by default.
        dimensions: default Matryoshka output size.
        use_activation: apply the classification activation by default (alias: ``softmax``,
            ``activation``).
        step_tag_id: default step tag of STEP pooling.
        returned_token_ids: default label columns of STEP pooling.
        enable_chunked_processing: embed prompts longer than ``max_model_len`` by chunks of
            ``max_model_len`` tokens, averaged by token count (``engine.chunked``, vLLM's
            long-text embedding).
        max_embed_len: the longest ``embed`` prompt accepted, in tokens (with chunked
            processing: up to this; ``None``: ``max_model_len``).
    """

    pooling_type: str | None = None
    normalize: bool | None = None
    dimensions: int | None = None
    use_activation: bool | None = None
    step_tag_id: int | None = None
    returned_token_ids: list[int] | None = None
    enable_chunked_processing: bool = False
    max_embed_len: int | None = None

    _ALIASES = {"softmax": "use_activation", "activation": "use_activation"}

    @classmethod
    def from_any(cls, value: PoolerConfig | dict[str, Any] | None) -> PoolerConfig:
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"pooler_config must be a dict or PoolerConfig, got {type(value).__name__}")
        allowed = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, val in value.items():
            if key in cls._ALIASES:
                warnings.warn(
                    f"pooler_config[{key!r}] is deprecated; use 'use_activation' instead",
                    DeprecationWarning,
                    stacklevel=3,
                )
            key = cls._ALIASES.get(key, key)
            if key in kwargs and kwargs[key] != val:  # use_activation and an alias disagree
                raise ValueError(f"pooler_config sets {key} to both {kwargs[key]!r} and {val!r}")
            if key not in allowed:
                raise ValueError(
                    f"Unknown pooler_config field {key!r}; allowed: {sorted(allowed | set(cls._ALIASES))}"
                )
            kwargs[key] = val
        cfg = cls(**kwargs)
        cfg.check_long_inputs()
        if cfg.pooling_type is not None:
            try:
                cfg.pooling_type = PoolingType(str(cfg.pooling_type).upper()).value
            except ValueError:
                raise ValueError(
                    f"Unknown pooling_type {cfg.pooling_type!r}; choose one of "
                    f"{[p.value for p in PoolingType]}"
                ) from None
        return cfg

    def check_long_inputs(self) -> None:
        """Type-check ``enable_chunked_processing`` and ``max_embed_len``."""
        if not isinstance(self.enable_chunked_processing, bool):
            raise TypeError(
                "pooler_config['enable_chunked_processing'] must be true or false, "
                f"got {self.enable_chunked_processing!r}"
            )
        m = self.max_embed_len
        if m is not None and (not isinstance(m, int) or isinstance(m, bool) or m < 1):
            raise ValueError(f"pooler_config['max_embed_len'] must be a positive integer, got {m!r}")


def resolve_convert(architectures: list[str], convert: str) -> str:
    """Map architecture names to ``embed`` or ``classify`` (the spec's conversion table)."""
    if convert not in ("auto", "embed", "classify", "none"):
        raise ValueError(f"convert must be 'auto', 'embed', 'classify' or 'none', got {convert!r}")
    if convert != "auto":
        return convert
    for arch in architectures:
        if (
            arch.endswith("ForSequenceClassification")
            or ("For" in arch and arch.endswith("Classification"))
            or arch.endswith("ClassificationModel")
        ):
            return "classify"
    return "embed"


def _apply_overrides(config: Any, overrides: dict[str, Any] | Callable[[Any], Any] | None) -> Any:
    if overrides is None:
        return config
    if callable(overrides):
        return overrides(config)
    if not isinstance(overrides, dict):
        raise TypeError(f"hf_overrides must be a dict or a callable, got {type(overrides).__name__}")
    for key, value in overrides.items():
        current = getattr(config, key, None)
        if isinstance(value, dict) and isinstance(current, dict):
            current.update(value)
        elif isinstance(value, dict) and hasattr(current, "to_dict"):
            for k, v in value.items():
                setattr(current, k, v)
        else:
            setattr(config, key, value)
    return config


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; choose 'auto' or one of {sorted(DTYPES)}")
    resolved = DTYPES[dtype]
    half = resolved in (torch.bfloat16, torch.float16)
    if device.type == "cpu" and half and not cpu_linear.fast_half(resolved):
        logger.warning(
            "dtype=%s on a CPU without native %s matrix products: oneDNN emulates them, "
            "several times slower than float32 (dtype='auto' picks float32 on the CPU)",
            dtype, "bf16" if resolved == torch.bfloat16 else "fp16",
        )  # fmt: skip
    return resolved


def resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for, but CUDA is not available")
    return dev


@dataclass
class ModelConfig:
    """Everything the engine decided about a model before loading its weights."""

    name: str
    path: Path
    hf_path: Path
    hf_config: Any
    convert: str
    device: torch.device
    dtype: torch.dtype
    max_model_len: int
    st: STConfig | None
    pooler: PoolerConfig
    trust_remote_code: bool = False
    colbert: ColbertCheckpoint | None = None
    """A ColBERT checkpoint's projection head and encoder settings (see ``colbert_checkpoint``)."""

    @property
    def architectures(self) -> list[str]:
        return list(getattr(self.hf_config, "architectures", None) or [])

    @property
    def model_type(self) -> str:
        return str(getattr(self.hf_config, "model_type", ""))

    @property
    def is_encoder(self) -> bool:
        return self.model_type in ENCODER_MODEL_TYPES and not getattr(self.hf_config, "is_decoder", False)

    @property
    def hidden_size(self) -> int:
        return int(self.hf_config.hidden_size)

    @property
    def is_matryoshka(self) -> bool:
        """``is_matryoshka`` / ``matryoshka_dimensions`` in ``config.json``, or a Sentence
        Transformers folder saved with a ``truncate_dim`` (its author cuts the embeddings)."""
        if self.st is not None and self.st.truncate_dim is not None:
            return True
        return bool(getattr(self.hf_config, "is_matryoshka", False)) or bool(self.matryoshka_dimensions)

    @property
    def matryoshka_dimensions(self) -> list[int] | None:
        dims = getattr(self.hf_config, "matryoshka_dimensions", None)
        return list(dims) if dims else None

    @property
    def served_model_name(self) -> str:
        """vLLM's name for the model's name in messages (``PoolingParams.verify`` reads it)."""
        return self.name

    @property
    def pooler_config(self) -> PoolerConfig:
        """vLLM's name for :attr:`pooler`."""
        return self.pooler

    def default_pooling_type(self) -> str:
        """``pooler_config`` > Sentence Transformers > CLS for encoders, LAST for decoders."""
        if self.pooler.pooling_type:
            return self.pooler.pooling_type
        if self.st is not None and self.st.pooling_type:
            return self.st.pooling_type
        return (
            PoolingType.CLS.value
            if self.is_encoder and self.convert != "classify"
            else PoolingType.LAST.value
        )

    def default_normalize(self) -> bool:
        if self.pooler.normalize is not None:
            return bool(self.pooler.normalize)
        if self.st is not None and self.st.pooling_type:
            return self.st.normalize
        return True


def _max_model_len(hf_config: Any, st: STConfig | None, tokenizer_max: int | None, user: int | None) -> int:
    limit = getattr(hf_config, "max_position_embeddings", None)
    if limit is not None and getattr(hf_config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        pad = getattr(hf_config, "pad_token_id", 1) or 1
        limit = limit - pad - 1  # RoBERTa positions start after the padding index
    candidates = [x for x in (limit, tokenizer_max) if x and x < 1_000_000]
    model_limit = min(candidates) if candidates else 512
    default = st.max_seq_length if st is not None and st.max_seq_length else model_limit
    default = min(default, model_limit)
    if user is None:
        return int(default)
    if not isinstance(user, int) or user < 1:
        raise ValueError(f"max_model_len must be a positive integer, got {user!r}")
    if user > model_limit:
        raise ValueError(f"max_model_len={user} is larger than the model's limit of {model_limit} tokens")
    return user


def load_hf_config(
    hf_path: Path, trust_remote_code: bool, hf_overrides: dict[str, Any] | Callable[[Any], Any] | None
) -> Any:
    """The transformers config of the folder, with ``hf_overrides`` applied."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(hf_path, trust_remote_code=trust_remote_code)
    return _apply_overrides(config, hf_overrides)


def build_model_config(
    args: EngineArgs,
    path: Path,
    hf_path: Path,
    hf_config: Any,
    st: STConfig | None,
    tokenizer_max_len: int | None,
) -> ModelConfig:
    """Every setting the engine needs, from the options and what was read from the folder.

    Args:
        args: the engine options.
        path: the model folder.
        hf_path: the folder of the transformers checkpoint (a Sentence Transformers
            ``Transformer`` module's path inside ``path``, else ``path``).
        hf_config: the transformers config (overrides applied).
        st: the Sentence Transformers configuration, if the folder has one.
        tokenizer_max_len: the tokenizer's ``model_max_length``.
    """
    dev = resolve_device(args.device)
    architectures = list(getattr(hf_config, "architectures", None) or [])
    colbert = read_colbert_checkpoint(path, hf_path, architectures)
    # PyLate saves the length it last tokenized with as max_seq_length: not a model limit
    length_st = None if colbert is not None and colbert.format == "pylate" else st
    return ModelConfig(
        name=os.fspath(args.model),
        path=path,
        hf_path=hf_path,
        hf_config=hf_config,
        convert=resolve_convert(architectures, args.convert),
        device=dev,
        dtype=resolve_dtype(args.dtype, dev),
        max_model_len=_max_model_len(hf_config, length_st, tokenizer_max_len, args.max_model_len),
        st=st,
        pooler=PoolerConfig.from_any(args.pooler_config),
        trust_remote_code=args.trust_remote_code,
        colbert=colbert,
    )
