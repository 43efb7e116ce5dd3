"""IO processor plugins: ``LLM.encode(..., pooling_task="plugin")``.

A plugin turns the caller's input into prompts for one of the model's pooling tasks, and
the pooled outputs into whatever it wants to return. Plugins register under the Python
entry point group ``vllm_pool.io_processor_plugins``; a registered name (or a plugin
object) is given to ``LLM(io_processor_plugin=...)``.

The shipped plugin ``topk_labels`` classifies texts and returns the ``k`` most likely labels
with their names from the model's ``id2label``.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from vllm_pool.engine.llm import LLM
    from vllm_pool.engine.outputs import PoolingOutput, PoolingRequestOutput

ENTRY_POINT_GROUP = "vllm_pool.io_processor_plugins"


@runtime_checkable
class IOProcessor(Protocol):
    """What a plugin provides. ``pooling_task`` is the task its prompts run as."""

    pooling_task: str

    def pre_process(self, data: Any) -> list[Any]:
        """Caller's input -> prompts for the engine."""
        ...

    def post_process(self, data: Any, outputs: list[PoolingRequestOutput[PoolingOutput]]) -> list[Any]:
        """The engine's outputs -> one result per prompt."""
        ...


def available_plugins() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load_io_processor(plugin: str | IOProcessor, llm: LLM) -> IOProcessor:
    """Instantiate a registered plugin by name (its factory gets the ``LLM``), or check an object."""
    if not isinstance(plugin, str):
        if not isinstance(plugin, IOProcessor):
            raise TypeError("io_processor_plugin must be a registered name or an IOProcessor object")
        return plugin
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == plugin]
    if not matches:
        raise ValueError(f"Unknown IO processor plugin {plugin!r}; registered plugins: {available_plugins()}")
    processor = matches[0].load()(llm)
    if processor.pooling_task not in llm.get_supported_tasks():
        raise ValueError(
            f"Plugin {plugin!r} needs the {processor.pooling_task!r} task, which model "
            f"{llm.model_name!r} does not support ({list(llm.get_supported_tasks())})"
        )
    return processor


class TopKLabels:
    """Classify texts and return the top-``k`` labels with their names and probabilities.

    Input: a string, a list of strings, or ``{"texts": [...], "k": 3}``. Output per text:
    ``[{"label": "positive", "index": 1, "score": 0.93}, ...]``, best first.
    """

    pooling_task = "classify"

    def __init__(self, llm: LLM, k: int = 3) -> None:
        config = llm.model_config.hf_config
        self.id2label = {int(i): str(name) for i, name in (getattr(config, "id2label", None) or {}).items()}
        self.k = k

    def _k(self, data: Any) -> int:
        k = data.get("k", self.k) if isinstance(data, dict) else self.k
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        return k

    def pre_process(self, data: Any) -> list[Any]:
        if isinstance(data, dict):
            if "texts" not in data:
                raise ValueError("topk_labels input dict needs a 'texts' list")
            self._k(data)
            data = data["texts"]
        return [data] if isinstance(data, str) else list(data)

    def post_process(self, data: Any, outputs: list[PoolingRequestOutput[PoolingOutput]]) -> list[Any]:
        k = self._k(data)
        results = []
        for out in outputs:
            probs = out.outputs.data
            top = probs.topk(min(k, probs.numel()))
            results.append(
                [
                    {"label": self.id2label.get(int(i), str(int(i))), "index": int(i), "score": float(s)}
                    for s, i in zip(top.values, top.indices)
                ]
            )
        return results
