"""The engine fields and the shared engine of the pydantic LlamaIndex classes."""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import BaseModel, Field, PrivateAttr

from vllm_pool import DEFAULT_MODEL

from .._engines import ENGINE_KWARGS_HELP, TRUNCATE_HELP, EngineRef
from .._hf_names import cap_truncation, translate


class EngineFields(BaseModel):
    """Engine fields (LlamaIndex's pydantic ``Field`` style) and the engine they select.

    Mixed in before a LlamaIndex base class. The engine loads in ``__init__`` (shared per
    process), so a bad model id fails at construction; pickling keeps only the fields.
    """

    model: str = Field(
        default=DEFAULT_MODEL,
        description="A local model folder or a Hugging Face Hub id (default: all-MiniLM-L6-v2, offline).",
    )
    dtype: str = Field(
        default="auto", description='Weights dtype: "auto" (fp32 on CPU, bf16/fp16 on GPU), "float32"...'
    )
    device: str = Field(default="auto", description='"auto" (GPU when there is one), "cpu", "cuda"...')
    max_model_len: int | None = Field(
        default=None, description="Token limit of the model (None: the model's)."
    )
    trust_remote_code: bool = Field(default=False, description="Allow custom model code in the folder.")
    engine_kwargs: dict[str, Any] | None = Field(default=None, description=ENGINE_KWARGS_HELP)
    truncate: bool = Field(default=True, description=TRUNCATE_HELP)

    _engine: EngineRef = PrivateAttr()

    def __init__(self, model: str | None = None, **kwargs: Any) -> None:
        if model is not None:
            kwargs["model"] = model
        # llama-index HuggingFaceEmbedding / SentenceTransformerRerank spellings as our fields
        kwargs = translate(type(self).__name__, type(self).model_fields, kwargs)
        super().__init__(**kwargs)
        self._engine = EngineRef.loaded_for(self)  # shared; a bad model id fails here
        cap_truncation(self)  # a max_length over the model's limit

    @property
    def llm(self) -> Any:
        """The shared ``vllm_pool.LLM`` this instance runs on."""
        return self._engine.llm
