"""Engine fields shared by the LangChain classes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from vllm_pool import DEFAULT_MODEL

from .._engines import ENGINE_KWARGS_HELP, TRUNCATE_HELP, EngineRef
from .._hf_names import cap_truncation, translate


class EngineFields(BaseModel):
    """Which engine to run: every instance with equal values shares one loaded engine."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, protected_namespaces=())

    model: str = DEFAULT_MODEL
    """A local model folder or a Hugging Face Hub id (default: all-MiniLM-L6-v2, offline)."""
    dtype: str = "auto"
    """Weights dtype: ``"auto"`` (fp32 on CPU, bf16/fp16 on GPU), ``"float32"``, ``"bfloat16"``..."""
    device: str = "auto"
    """``"auto"`` (GPU when there is one), ``"cpu"``, ``"cuda"``, ``"cuda:1"``..."""
    max_model_len: int | None = None
    """Token limit of the model (``None``: the model's own)."""
    trust_remote_code: bool = False
    """Allow custom model code declared in the model folder."""
    engine_kwargs: dict[str, Any] | None = Field(default=None, description=ENGINE_KWARGS_HELP)
    truncate: bool = Field(default=True, description=TRUNCATE_HELP)

    _engine: EngineRef = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _huggingface_names(cls, data: Any) -> Any:
        """Accept langchain-huggingface's spellings (``model_name``, ``model_kwargs``,
        ``encode_kwargs``, ``show_progress_bar``, ``max_length``...) as our fields."""
        if not isinstance(data, dict):
            return data
        return translate(cls.__name__, cls.model_fields, data)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._engine = EngineRef.loaded_for(self)  # shared; a bad model id fails here
        cap_truncation(self)  # a max_length over the model's limit

    @property
    def llm(self) -> Any:
        """The shared ``vllm_pool.LLM`` this instance runs on."""
        return self._engine.llm
