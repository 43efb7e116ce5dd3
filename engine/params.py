"""`PoolingParams`: per-request options of the pooling APIs (same names as vLLM)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vllm_pool.engine.pooler import Pooler

_TOKEN_FIELDS = ("step_tag_id", "returned_token_ids")
_TASK_FIELDS: dict[str, tuple[str, ...]] = {
    "embed": ("dimensions", "normalize"),
    "token_embed": ("dimensions", "normalize") + _TOKEN_FIELDS,
    "classify": ("use_activation",),
    "score": ("use_activation",),
    "token_classify": ("use_activation",) + _TOKEN_FIELDS,
    "plugin": ("dimensions", "normalize", "use_activation") + _TOKEN_FIELDS,
}


@dataclass
class PoolingParams:
    """Options for one pooling request.

    Args:
        truncate_prompt_tokens: cut prompts to this many tokens (``-1``: the model's limit).
            Without it, a prompt longer than the model's limit is an error (as in vLLM).
        dimensions: Matryoshka output size for ``embed`` / ``token_embed``.
        normalize: L2-normalize ``embed`` / ``token_embed`` outputs (``None``: model default).
        use_activation: apply the activation of ``classify`` / ``score`` /
            ``token_classify`` (``None``: model default).
        step_tag_id: for STEP pooling, keep only positions holding this token id.
        returned_token_ids: for STEP pooling, keep only these label columns.
        activation: deprecated spelling of ``use_activation`` (a ``DeprecationWarning``).
        softmax: deprecated spelling of ``use_activation`` (a ``DeprecationWarning``).

    Raises:
        TypeError: a field of the wrong type (``normalize="yes"``, ``normalize=0``,
            ``dimensions="3"``...), naming the field.
        ValueError: ``activation`` / ``softmax`` contradicting ``use_activation``.
    """

    truncate_prompt_tokens: int | None = None
    dimensions: int | None = None
    normalize: bool | None = None
    use_activation: bool | None = None
    step_tag_id: int | None = None
    returned_token_ids: list[int] | None = None
    activation: bool | None = field(default=None, repr=False)
    softmax: bool | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("activation", "softmax"):
            value = getattr(self, name)
            if value is None:
                continue
            warnings.warn(
                f"PoolingParams({name}=...) is deprecated; use use_activation instead",
                DeprecationWarning,
                stacklevel=3,
            )
            _check_bool(name, value)
            if self.use_activation is not None and self.use_activation != value:
                raise ValueError(f"{name}={value!r} contradicts use_activation={self.use_activation!r}")
            self.use_activation = value
            setattr(self, name, None)  # one spelling from here on
        for name in ("normalize", "use_activation"):
            _check_bool(name, getattr(self, name))
        for name in ("dimensions", "step_tag_id"):
            _check_int(name, getattr(self, name))
        ids = self.returned_token_ids
        if ids is not None:
            if not isinstance(ids, (list, tuple)):
                kind = type(ids).__name__
                raise ParamTypeError(f"returned_token_ids must be a list of integers, got {kind}")
            for i, v in enumerate(ids):
                _check_int(f"returned_token_ids[{i}]", v)

    def verify(self, task: str, model_config: Any = None, *, pooling_type: str | None = None) -> None:
        """Check the fields against ``task`` (vLLM's rules and messages).

        Only the fields ``task`` uses may be set; ``step_tag_id`` / ``returned_token_ids``
        only with STEP pooling. ``pooling_type`` is the task pooler's method; a vLLM-style
        ``model_config`` (``pooler_config.pooling_type``, ``is_matryoshka``,
        ``matryoshka_dimensions``, ``served_model_name``) also checks ``dimensions``.
        """
        allowed = _TASK_FIELDS.get(task, ())
        pooler_config = getattr(model_config, "pooler_config", None)
        if pooling_type is None and pooler_config is not None:
            pooling_type = getattr(pooler_config, "pooling_type", None)
        if task != "plugin" and str(pooling_type or "").upper() != "STEP":
            allowed = tuple(f for f in allowed if f not in _TOKEN_FIELDS)
        extra = [
            name
            for name in ("dimensions", "normalize", "use_activation", "step_tag_id", "returned_token_ids")
            if getattr(self, name) is not None and name not in allowed
        ]
        if extra:
            raise ValueError(
                f"Task {task} only supports {list(allowed)} parameters, does not support {extra} parameters"
            )
        if model_config is not None and self.dimensions is not None and task in ("embed", "token_embed"):
            check_dimensions(
                self.dimensions,
                str(getattr(model_config, "served_model_name", None) or getattr(model_config, "model", "")),
                bool(getattr(model_config, "is_matryoshka", False)),
                getattr(model_config, "matryoshka_dimensions", None),
                getattr(model_config, "embedding_size", None),
            )

    def clone(self, **changes: object) -> PoolingParams:
        return replace(self, **changes)  # type: ignore[arg-type]

    def key(self) -> tuple[Any, ...]:
        """Every field's value and type in a hashable tuple (lists as tuples): equal params,
        equal keys; ``2`` and ``2.0`` or ``1`` and ``True`` (one valid, one not) differ."""
        return tuple(typed_key(getattr(self, n)) for n in _FIELD_NAMES)

    def check(self) -> None:
        """Validate values that do not depend on the model."""
        t = self.truncate_prompt_tokens
        if t is not None and (not isinstance(t, int) or isinstance(t, bool) or (t < 1 and t != -1)):
            raise ValueError(f"truncate_prompt_tokens must be a positive integer or -1, got {t!r}")
        _check_int("dimensions", self.dimensions)


_FIELD_NAMES = tuple(f.name for f in fields(PoolingParams))


def typed_key(value: Any) -> Any:
    """``value`` with its type (lists and tuples item by item), hashable."""
    if isinstance(value, (list, tuple)):
        return type(value), tuple(typed_key(v) for v in value)
    return type(value), value


def check_dimensions(
    dimensions: int,
    model_name: str,
    is_matryoshka: bool,
    matryoshka_dimensions: list[int] | None,
    embedding_size: int | None = None,
) -> None:
    """vLLM's Matryoshka checks, in its order and with its messages (a ``ValueError``)."""
    if not is_matryoshka and not matryoshka_dimensions:
        raise ValueError(
            f'Model "{model_name}" does not support matryoshka representation, '
            "changing output dimensions will lead to poor results."
        )
    if matryoshka_dimensions:
        if dimensions not in matryoshka_dimensions:
            raise ValueError(
                f'Model "{model_name}" only supports {list(matryoshka_dimensions)} matryoshka dimensions, '
                "use other output dimensions will lead to poor results."
            )
    elif dimensions < 1:
        raise ValueError("Dimensions must be greater than 0")
    if embedding_size is not None and dimensions > embedding_size:
        raise ValueError(
            f"dimensions={dimensions} is larger than the model's embedding size {embedding_size}"
        )


class ParamTypeError(TypeError, ValueError):
    """A :class:`PoolingParams` field of the wrong type: a ``TypeError``, and a ``ValueError``
    too, since vLLM's callers (and its tests) catch invalid parameters as ``ValueError``."""


def _check_bool(name: str, value: object) -> None:
    if value is not None and not isinstance(value, bool):
        raise ParamTypeError(f"{name} must be a bool or None, got {type(value).__name__} {value!r}")


def _check_int(name: str, value: object) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ParamTypeError(f"{name} must be an integer or None, got {type(value).__name__} {value!r}")


def normalize_params(
    params: PoolingParams | Sequence[PoolingParams] | None, n: int, what: str = "prompts"
) -> list[PoolingParams]:
    """One :class:`PoolingParams` per prompt (``what``: the inputs' name in errors, e.g. ``"pairs"``)."""
    if params is None:
        return [PoolingParams()] * n  # one shared object: resolved once (see resolve_params)
    if isinstance(params, PoolingParams):
        return [params] * n
    if isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
        params = list(params)
        if len(params) != n:
            raise ValueError(f"pooling_params has {len(params)} entries but there are {n} {what}")
        for i, p in enumerate(params):
            if not isinstance(p, PoolingParams):
                raise TypeError(f"pooling_params[{i}] must be PoolingParams, got {type(p).__name__}")
        return params
    raise TypeError(f"pooling_params must be PoolingParams or a list of them, got {type(params).__name__}")


def resolve_params(
    pooler: Pooler, params: list[PoolingParams], truncate_prompt_tokens: int | None = None
) -> list[PoolingParams]:
    """``pooler.resolve`` (the task's check and defaults) applied once per distinct params object.

    Callers usually pass one object for every prompt; resolving it once per prompt costs
    more than a GPU's forward pass on short texts.
    """
    done: dict[int, PoolingParams] = {}
    out = []
    for p in params:
        r = done.get(id(p))
        if r is None:
            r = done[id(p)] = pooler.resolve(p, truncate_prompt_tokens)
        out.append(r)
    return out
