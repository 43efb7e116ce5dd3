"""``vllm-pool embed`` fixes: a model-level error is not blamed on an input line and is found
before any text is encoded, bad numeric options and a folder as ``--output`` fail before the
model loads (one line, exit 1), a failed write is a one-line error, and a UTF-8 byte order
mark is not part of the first text. References: ``LLM.embed`` on the same texts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vllm_pool import LLM, PoolingParams, embed_job
from vllm_pool.cli import build_parser, main

TEXTS = ["first text", "second", "the third text"]


@pytest.fixture(scope="module")
def matryoshka_llm(tiny_bert) -> LLM:
    return LLM(str(tiny_bert), hf_overrides={"matryoshka_dimensions": [8]})


def _args(tmp_path: Path, *extra: str, output: str = "out.npy", content: str | None = None):
    src = tmp_path / "in.txt"
    src.write_text(content if content is not None else "\n".join(TEXTS) + "\n", encoding="utf-8")
    argv = ["embed", "-i", str(src), "-o", str(tmp_path / output), "--no-progress", *extra]
    return build_parser().parse_args(argv)


def _never_loaded() -> Any:
    raise AssertionError("the model was loaded")


class _Counting:
    """The engine, counting its ``embed`` calls."""

    def __init__(self, llm: LLM) -> None:
        self.llm, self.calls = llm, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.llm, name)

    def embed(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.llm.embed(*args, **kwargs)


def test_model_error_names_no_input_line_and_comes_before_encoding(matryoshka_llm, tmp_path):
    with pytest.raises(ValueError) as direct:
        matryoshka_llm.embed(TEXTS, PoolingParams(dimensions=4), use_tqdm=False)
    engine = _Counting(matryoshka_llm)
    with pytest.raises(embed_job.JobError) as job:
        embed_job.run(_args(tmp_path, "--dimensions", "4"), lambda: engine)
    assert str(job.value) == str(direct.value) and "[8]" in str(job.value)  # no "input line 9: "
    assert engine.calls == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
    embed_job.run(_args(tmp_path, "--dimensions", "8"), lambda: engine)  # a size it has
    want = matryoshka_llm.embed(TEXTS, PoolingParams(dimensions=8), use_tqdm=False)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), [o.outputs.embedding for o in want], atol=1e-6)


def test_only_engine_positions_name_a_line():
    rows = embed_job.Rows(texts=["a", "b", "c"], lines=[1, 3, 4], ids=[None] * 3)
    assert embed_job._line_of("prompts[2] is empty", rows) == "input line 4: prompts[2] is empty"
    assert embed_job._line_of("texts[1]: bad", rows) == "input line 3: texts[1]: bad"
    message = 'Model "m" only supports [1] matryoshka dimensions'
    assert embed_job._line_of(message, rows) == message


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--truncate-prompt-tokens", "0"], "--truncate-prompt-tokens must be a positive integer or -1, got"),
        (["--dimensions", "0"], "--dimensions must be a positive integer, got 0"),
    ],
)
def test_bad_numeric_options_fail_before_loading(tmp_path, flags, message):
    with pytest.raises(embed_job.JobError, match=f"^{message}"):
        embed_job.run(_args(tmp_path, *flags), _never_loaded)


def test_folder_output_fails_before_loading_with_one_line(tmp_path, capsys):
    (tmp_path / "out.npy").mkdir()
    with pytest.raises(embed_job.JobError, match="is a folder"):
        embed_job.run(_args(tmp_path, "--overwrite"), _never_loaded)
    argv = ["embed", "/no/such/model", "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.npy")]
    assert main([*argv, "--overwrite"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    dst = tmp_path / "out.npy"
    assert err == [f"vllm-pool embed: --output {dst} is a folder (give a .npy or .jsonl file)"]


def test_a_failed_write_is_a_job_error_and_leaves_no_file(matryoshka_llm, tmp_path, monkeypatch):
    args = _args(tmp_path, output="out.jsonl")

    def folder_meanwhile(src: str, dst: Any) -> None:
        raise IsADirectoryError(21, "Is a directory", src, str(dst))

    monkeypatch.setattr(os, "replace", folder_meanwhile)
    with pytest.raises(embed_job.JobError, match=r"^cannot write --output .*out\.jsonl: .*Is a directory"):
        embed_job.run(args, lambda: matryoshka_llm)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]  # the temporary file is gone


def test_byte_order_mark_is_not_part_of_the_first_text(matryoshka_llm, tmp_path):
    args = _args(tmp_path, content="\ufeff" + "\n".join(TEXTS))
    assert embed_job.read_rows(Path(args.input)).texts == TEXTS
    embed_job.run(args, lambda: matryoshka_llm)
    want = [o.outputs.embedding for o in matryoshka_llm.embed(TEXTS, use_tqdm=False)]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), want, atol=1e-6)
    lines = ["\ufeff" + json.dumps({"id": "a", "text": TEXTS[0]}), json.dumps(TEXTS[1])]
    (tmp_path / "in.jsonl").write_text("\n".join(lines), encoding="utf-8")
    rows = embed_job.read_rows(tmp_path / "in.jsonl")
    assert rows.texts == TEXTS[:2] and rows.ids == ["a", None]


def test_jsonl_output_rows_always_have_an_id_key(matryoshka_llm, tmp_path):
    lines = [json.dumps({"id": "a", "text": TEXTS[0]}), json.dumps(TEXTS[1])]
    (tmp_path / "in.jsonl").write_text("\n".join(lines), encoding="utf-8")
    args = _args(tmp_path)
    args.input, args.output = str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl")
    embed_job.run(args, lambda: matryoshka_llm)
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["line"], r["id"]) for r in rows] == [(1, "a"), (2, None)]
    assert all(len(r["embedding"]) == len(rows[0]["embedding"]) > 0 for r in rows)
