"""Engine fields shared by the LlamaIndex classes (LlamaIndex's pydantic ``Field`` style)."""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import Field

from vllm_pool import DEFAULT_MODEL

from .._engines import EngineOptions, EngineRef


def engine_fields() -> dict[str, Any]:
    """Fresh pydantic ``Field`` objects for the engine fields (one set per class)."""
    return {
        "model": Field(
            default=DEFAULT_MODEL,
            description="A local model folder or a Hugging Face Hub id (default: all-MiniLM-L6-v2, offline).",
        ),
        "dtype": Field(
            default="auto", description='Weights dtype: "auto" (fp32 on CPU, bf16/fp16 on GPU), "float32"...'
        ),
        "device": Field(default="auto", description='"auto" (GPU when there is one), "cpu", "cuda"...'),
        "max_model_len": Field(default=None, description="Token limit of the model (None: the model's)."),
        "trust_remote_code": Field(default=False, description="Allow custom model code in the folder."),
        "engine_kwargs": Field(
            default=None,
            description="Other vllm_pool.LLM options: max_num_batched_tokens, max_num_seqs, pooler_config, "
            "hf_overrides, convert, revision.",
        ),
    }


def engine_ref(obj: Any) -> EngineRef:
    """An :class:`EngineRef` for the engine fields of ``obj``, with the engine loaded."""
    ref = EngineRef(
        EngineOptions.make(
            obj.model, obj.dtype, obj.device, obj.max_model_len, obj.trust_remote_code, obj.engine_kwargs
        )
    )
    ref.llm  # load now (shared), so a bad model id fails at construction  # noqa: B018
    return ref
