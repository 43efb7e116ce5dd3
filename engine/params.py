"""`PoolingParams`: per-request options of the pooling APIs (same names as vLLM)."""

from __future__ import annotations

from dataclasses import dataclass, replace

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
            Prompts longer than the model's limit are always cut to it.
        dimensions: Matryoshka output size for ``embed`` / ``token_embed``.
        normalize: L2-normalize ``embed`` / ``token_embed`` outputs (``None``: model default).
        use_activation: apply the activation of ``classify`` / ``score`` /
            ``token_classify`` (``None``: model default).
        step_tag_id: for STEP pooling, keep only positions holding this token id.
        returned_token_ids: for STEP pooling, keep only these label columns.
    """

    truncate_prompt_tokens: int | None = None
    dimensions: int | None = None
    normalize: bool | None = None
    use_activation: bool | None = None
    step_tag_id: int | None = None
    returned_token_ids: list[int] | None = None

    def verify(self, task: str) -> None:
        """Check that only the fields ``task`` uses are set (vLLM's rule)."""
        allowed = _TASK_FIELDS.get(task, ())
        extra = [
            name
            for name in ("dimensions", "normalize", "use_activation", "step_tag_id", "returned_token_ids")
            if getattr(self, name) is not None and name not in allowed
        ]
        if extra:
            raise ValueError(
                f"Task {task} only supports {list(allowed)} parameters, does not support {extra} parameters"
            )

    def clone(self, **changes: object) -> PoolingParams:
        return replace(self, **changes)  # type: ignore[arg-type]

    def check(self) -> None:
        """Validate values that do not depend on the model."""
        t = self.truncate_prompt_tokens
        if t is not None and (not isinstance(t, int) or isinstance(t, bool) or (t < 1 and t != -1)):
            raise ValueError(f"truncate_prompt_tokens must be a positive integer or -1, got {t!r}")
        d = self.dimensions
        if d is not None:
            if not isinstance(d, int) or isinstance(d, bool):
                raise TypeError(f"dimensions must be an integer, got {type(d).__name__}")
            if d < 1:
                raise ValueError("Dimensions must be greater than 0")
