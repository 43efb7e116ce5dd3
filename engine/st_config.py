"""Sentence Transformers folder configuration: ``modules.json`` mapped to pooling settings.

The modules that shape a pooled embedding are read: ``Transformer`` (where the Hugging
Face model lives, ``max_seq_length``, ``do_lower_case``), ``Pooling`` (the mode), ``Dense``
(projection layers with their activation, ``use_residual``) and ``Normalize``, in that
order. Any other module, or another order, is refused with an error naming it: the engine
would otherwise compute an embedding that differs from ``SentenceTransformer.encode``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

_POOLING_MODES = {
    "cls": "CLS",
    "mean": "MEAN",
    "lasttoken": "LAST",
    "last": "LAST",
}
_LEGACY_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_lasttoken": "lasttoken",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
}


@dataclass
class DenseLayer:
    """A Sentence Transformers ``Dense`` module: ``activation(x @ weight.T + bias)``."""

    weight: torch.Tensor  # [out, in]
    bias: torch.Tensor | None  # [out]
    activation: str  # a torch.nn class name, e.g. "Tanh" or "Identity"
    residual: bool = False  # ``use_residual``: ``activation(...) + x``


@dataclass
class STConfig:
    """What a Sentence Transformers folder says about pooling."""

    transformer_path: str = ""
    pooling_type: str | None = None
    include_prompt: bool = True
    dense: list[DenseLayer] = field(default_factory=list)
    normalize: bool = False
    max_seq_length: int | None = None
    do_lower_case: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str | None = None
    activation_fn: str | None = None  # CrossEncoder folders
    truncate_dim: int | None = None  # Sentence Transformers >= 6: sentence embeddings cut to this


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"Invalid JSON in {path}: {e}") from e


def _pooling_mode(cfg: dict[str, Any], path: Path) -> tuple[str, bool]:
    mode = cfg.get("pooling_mode")
    if mode is None:
        modes = [name for key, name in _LEGACY_FLAGS.items() if cfg.get(key)]
        if len(modes) != 1:
            raise ValueError(f"{path}: expected exactly one pooling mode, found {modes or 'none'}")
        mode = modes[0]
    if isinstance(mode, list):
        if len(mode) != 1:
            raise ValueError(f"{path}: concatenated pooling modes {mode} are not supported")
        mode = mode[0]
    if mode not in _POOLING_MODES:
        raise ValueError(
            f"{path}: Sentence Transformers pooling mode {mode!r} is not supported "
            f"(supported: {sorted(set(_POOLING_MODES))})"
        )
    return _POOLING_MODES[mode], bool(cfg.get("include_prompt", True))


def _load_dense(folder: Path) -> DenseLayer:
    cfg = _read_json(folder / "config.json")
    st_file, bin_file = folder / "model.safetensors", folder / "pytorch_model.bin"
    if st_file.is_file():
        from safetensors.torch import load_file

        state = load_file(str(st_file))
    elif bin_file.is_file():
        state = torch.load(bin_file, map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"No weights for the Dense module in {folder}")
    weight = state.get("linear.weight")
    if weight is None:
        raise ValueError(f"{folder}: Dense weights have no 'linear.weight'")
    act = cfg.get("activation_function") or "torch.nn.modules.linear.Identity"
    if not act.startswith("torch.nn."):
        raise ValueError(f"{folder}: activation {act!r} is not a torch.nn module")
    residual = bool(cfg.get("use_residual", False))
    if residual and weight.shape[0] != weight.shape[1]:
        raise ValueError(f"{folder}: use_residual needs a square Dense layer, got {list(weight.shape)}")
    bias = state.get("linear.bias")
    return DenseLayer(weight.float(), bias, act.rsplit(".", 1)[-1], residual)


_SUPPORTED = ("Transformer", "Pooling", "Dense", "Normalize")
_HINTS = {
    "LogitScore": " A causal-LM reranker loads as in vLLM: its Transformer folder with convert='classify' "
    "and hf_overrides {'classifier_from_token': [false token, true token], 'method': "
    "'from_2_way_softmax'} (README, 'Conversion table').",
}


def _unsupported(folder: Path, kind: str) -> str:
    return (
        f"{folder}: the Sentence Transformers module {kind!r} is not supported, so the engine could not "
        f"compute what Sentence Transformers does (supported modules: {', '.join(_SUPPORTED)}, in that "
        f"order).{_HINTS.get(kind, '')}"
    )


def _check_order(folder: Path, before: list[str], kind: str) -> None:
    """Refuse module orders the engine's fixed pipeline (transformer, pooling, projection,
    normalization) would compute differently, instead of a silently different embedding."""
    if kind in ("Pooling", "Dense") and "Normalize" in before:
        raise ValueError(f"{folder}: a {kind} module after Normalize is not supported (it must be last)")
    if kind == "Pooling" and "Dense" in before:  # a folder without Pooling (PyLate) projects tokens
        raise ValueError(f"{folder}: a Dense module before Pooling (on token embeddings) is not supported")


def load_st_config(folder: Path) -> STConfig | None:
    """Read ``modules.json`` and the module folders; ``None`` when the folder has none."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    st = STConfig()
    kinds: list[str] = []
    for module in sorted(modules, key=lambda m: m.get("idx", 0)):
        kind = module.get("type", "").rsplit(".", 1)[-1]
        path = folder / module.get("path", "")
        _check_order(folder, kinds, kind)
        kinds.append(kind)
        if kind == "Transformer":
            st.transformer_path = module.get("path", "")
            for name in ("sentence_bert_config.json", "sentence_xlnet_config.json"):
                if (path / name).is_file():
                    cfg = _read_json(path / name)
                    st.max_seq_length = cfg.get("max_seq_length")
                    st.do_lower_case = bool(cfg.get("do_lower_case", False))
                    break
        elif kind == "Pooling":
            st.pooling_type, st.include_prompt = _pooling_mode(_read_json(path / "config.json"), path)
        elif kind == "Dense":
            st.dense.append(_load_dense(path))
        elif kind == "Normalize":
            st.normalize = True
        else:
            raise ValueError(_unsupported(folder, kind))
    st_cfg_file = folder / "config_sentence_transformers.json"
    if st_cfg_file.is_file():
        cfg = _read_json(st_cfg_file)
        st.prompts = dict(cfg.get("prompts") or {})
        st.default_prompt_name = cfg.get("default_prompt_name")
        st.similarity_fn_name = cfg.get("similarity_fn_name")
        st.activation_fn = cfg.get("activation_fn")
        st.truncate_dim = _truncate_dim(cfg.get("truncate_dim"), st_cfg_file)
    return st


def _truncate_dim(value: Any, path: Path) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{path}: truncate_dim must be a positive integer or null, got {value!r}")
    return value
