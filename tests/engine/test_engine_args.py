"""`EngineArgs`: the one declaration of the engine options, and every front that derives from it.

The fronts are ``LLM(...)``, ``vllm-pool serve`` flags, and the LangChain / LlamaIndex
classes (own fields + ``engine_kwargs``). Each test walks ``EngineArgs``' fields, so an
option added there and forgotten in a front fails here.
"""

from __future__ import annotations

import argparse
import inspect
from dataclasses import fields

import pytest
import torch

from vllm_pool import LLM, EngineArgs
from vllm_pool.cli import build_parser, llm_kwargs

OPTIONS = {f.name: f for f in fields(EngineArgs)}


def _serve_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["serve"]


def test_llm_keywords_are_the_engine_args_fields_with_their_defaults():
    params = inspect.signature(LLM.__init__).parameters
    names = [n for n in params if n != "self"]
    assert names == list(OPTIONS), "LLM(...) and EngineArgs must list the same options in the same order"
    for name, param in params.items():
        if name in ("self", "model"):
            continue
        assert param.kind is inspect.Parameter.KEYWORD_ONLY, name
        assert param.default == OPTIONS[name].default, name


def test_every_option_has_a_cli_flag_with_its_default_in_help():
    parser = _serve_parser()
    by_dest = {a.dest: a for a in parser._actions}
    for name, f in OPTIONS.items():
        assert name in by_dest, f"vllm-pool serve has no flag for {name}"
        assert by_dest[name].default == f.default, name
        assert "(default: %(default)s)" in by_dest[name].help, name
    help_text = parser.format_help()
    for flag in ("--compile", "--packed", "--no-packed", "--io-processor-plugin", "--revision"):
        assert flag in help_text
    defaults = parser.parse_args([])
    assert EngineArgs.from_cli_args(defaults) == EngineArgs()


def test_cli_flags_round_trip_to_engine_args():
    args = build_parser().parse_args(
        ["serve", "m", "--compile", "--no-packed", "--io-processor-plugin", "topk_labels",
         "--max-num-seqs", "3", "--dtype", "bf16", "--trust-remote-code", "--revision", "main"]
    )  # fmt: skip
    ea = EngineArgs.from_cli_args(args)
    assert ea.model == "m" and ea.compile is True and ea.packed is False and ea.max_num_seqs == 3
    assert ea.io_processor_plugin == "topk_labels" and ea.dtype == "bf16" and ea.trust_remote_code
    assert llm_kwargs(args) == ea.llm_kwargs()
    assert build_parser().parse_args(["serve", "--packed"]).packed is True
    assert build_parser().parse_args(["serve"]).packed is None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"runner": "generate"}, ValueError, "runs pooling models only"),
        ({"convert": "reward"}, ValueError, "convert must be"),
        ({"dtype": "float8"}, ValueError, "Unknown dtype 'float8'"),
        ({"device": 3}, TypeError, "device must be"),
        ({"max_model_len": 0}, ValueError, "max_model_len must be a positive integer, got 0"),
        ({"max_num_batched_tokens": -5}, ValueError, "max_num_batched_tokens must be a positive integer"),
        ({"max_num_seqs": True}, ValueError, "max_num_seqs must be a positive integer"),
        ({"compile": "yes"}, TypeError, "compile must be True or False"),
        ({"packed": 1}, TypeError, "packed must be True, False or None"),
        ({"trust_remote_code": None}, TypeError, "trust_remote_code must be True or False"),
        ({"hf_overrides": [1]}, TypeError, "hf_overrides must be a dict or a callable"),
        ({"pooler_config": {"poolng_type": "CLS"}}, ValueError, "Unknown pooler_config field 'poolng_type'"),
        ({"revision": 3}, TypeError, "revision must be a string"),
        ({"io_processor_plugin": 7}, TypeError, "io_processor_plugin must be a registered name"),
        ({"model": ""}, TypeError, "model must be"),
    ],
)
def test_bad_options_fail_before_loading_naming_the_option(kwargs, error, match):
    with pytest.raises(error, match=match):
        EngineArgs(**kwargs)
    model = kwargs.pop("model", "no/such-model-is-ever-loaded")
    with pytest.raises(error, match=match):  # the same check, before any file is looked up
        LLM(model, **kwargs)


def test_good_values_are_kept_as_given():
    ea = EngineArgs(dtype=torch.float16, device=torch.device("cpu"), hf_overrides=lambda c: c, packed=True)
    assert ea.dtype is torch.float16 and ea.packed is True and callable(ea.hf_overrides)
    assert set(ea.llm_kwargs()) == set(OPTIONS) - {"model"}


def test_integrations_accept_every_option():
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from vllm_pool.integrations._engines import ENGINE_KWARGS_HELP, OWN_FIELDS, engine_kwargs_keys
    from vllm_pool.integrations.langchain._base import EngineFields as LangChainFields
    from vllm_pool.integrations.llamaindex._base import EngineFields as LlamaIndexFields
    from vllm_pool.integrations.llamaindex.colbert_retriever import VllmPoolColBERTRetriever

    colbert_params = inspect.signature(VllmPoolColBERTRetriever.__init__).parameters
    kwargs_keys = engine_kwargs_keys()
    for name, f in OPTIONS.items():
        if name in OWN_FIELDS:
            assert LangChainFields.model_fields[name].default == f.default, name
            assert LlamaIndexFields.model_fields[name].default == f.default, name
            assert colbert_params[name].default == f.default, name
        else:
            assert name in kwargs_keys, f"engine_kwargs does not accept {name}"
            assert name in ENGINE_KWARGS_HELP, f"the engine_kwargs description does not name {name}"
    assert set(OWN_FIELDS) | set(kwargs_keys) == set(OPTIONS)


def test_engine_options_check_values_at_construction():
    from vllm_pool.integrations import EngineOptions

    with pytest.raises(ValueError, match="max_num_seqs must be a positive integer"):
        EngineOptions.make("m", engine_kwargs={"max_num_seqs": 0})
    with pytest.raises(TypeError, match=r"engine_kwargs\['hf_overrides'\] must be JSON-like"):
        EngineOptions.make("m", engine_kwargs={"hf_overrides": lambda c: c})
    opts = EngineOptions.make("m", engine_kwargs={"io_processor_plugin": "topk_labels", "packed": False})
    ea = opts.engine_args()
    assert ea.model == "m" and ea.io_processor_plugin == "topk_labels" and ea.packed is False
