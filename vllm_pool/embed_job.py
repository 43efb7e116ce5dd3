"""``vllm-pool embed``: embed a file of texts into a ``.npy`` or ``.jsonl`` file.

Inputs: ``.txt`` (one text per line; every line is a row, blank ones too) or ``.jsonl`` (one
JSON object per line with the text under ``--text-field``, default ``"text"``, and an
optional id under ``--id-field``; a bare JSON string is a text; blank lines are skipped).
A UTF-8 byte order mark at the start of the file is dropped. The whole input and the job's
options are read and checked first, so a bad line fails before the model loads, with its line
number; the output dimensions are checked against the model before any text is encoded.
Outputs: ``.npy`` (a float32 ``[rows, dim]`` array, rows in input order) or ``.jsonl``
(``{"line": n, "id": ..., "embedding": [...]}`` per row). The output is written to a
temporary file beside it and renamed into place: a failed job leaves no partial file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger("vllm_pool.cli")

INPUT_SUFFIXES = (".txt", ".jsonl")
OUTPUT_SUFFIXES = (".npy", ".jsonl")


class JobError(Exception):
    """A problem with the job's files or inputs, reported without a traceback."""


@dataclass
class Rows:
    """The texts of an input file, with where each came from."""

    texts: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    """1-based line number of each text."""
    ids: list[Any] = field(default_factory=list)
    """The id of each row (``None`` where the input has none)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The job's own flags (the engine flags come from ``EngineArgs.add_cli_args``)."""
    parser.add_argument("--input", "-i", required=True, help="texts: a .txt (one per line) or .jsonl file")
    parser.add_argument("--output", "-o", required=True, help="embeddings: a .npy or .jsonl file")
    parser.add_argument("--text-field", default="text", help="key of the text in each .jsonl object")
    parser.add_argument("--id-field", default="id", help="key of the row id in each .jsonl object (optional)")
    parser.add_argument(
        "--instruction",
        default=None,
        help="text put before every input, e.g. 'query: ' (kept out of pooling where the model's "
        "Sentence Transformers Pooling says include_prompt: false)",
    )
    parser.add_argument(
        "--prompt-name",
        default=None,
        help="a prompt of the model's config_sentence_transformers.json, e.g. 'query' or 'document'",
    )
    parser.add_argument("--dimensions", type=int, default=None, help="Matryoshka output size")
    parser.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="L2-normalize the embeddings (None: the model's own setting, e.g. its Normalize module)",
    )
    parser.add_argument(
        "--truncate-prompt-tokens", type=int, default=None,
        help="cut each text to this many tokens (-1: the model's limit)",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def read_rows(path: Path, text_field: str = "text", id_field: str = "id") -> Rows:
    """The texts of ``path`` (``.txt`` or ``.jsonl``).

    Raises:
        JobError: the file cannot be read, or a line is not a usable row (naming the line).
    """
    try:
        # utf-8-sig: a leading byte order mark is not part of the first text; universal
        # newlines: "\r\n" and "\r" read as "\n"
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().split("\n")  # not splitlines(): a text may hold "\f", "\x85", "\u2028"
        if lines[-1] == "":  # the newline that ends the last line
            lines.pop()
    except (OSError, UnicodeDecodeError) as exc:
        raise JobError(f"cannot read --input {path}: {exc}") from exc
    rows = Rows()
    jsonl = path.suffix == ".jsonl"
    for n, line in enumerate(lines, start=1):
        if not jsonl:
            rows.texts.append(line)
            rows.lines.append(n)
            rows.ids.append(None)
            continue
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise JobError(f"{path} line {n}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if isinstance(value, str):
            text, row_id = value, None
        elif isinstance(value, dict):
            if text_field not in value:
                keys = sorted(value)
                raise JobError(f"{path} line {n}: no {text_field!r} key (keys: {keys}); see --text-field")
            text, row_id = value[text_field], value.get(id_field)
        else:
            raise JobError(f"{path} line {n}: expected a JSON object or string, got {type(value).__name__}")
        if not isinstance(text, str):
            raise JobError(f"{path} line {n}: {text_field!r} must be a string, got {type(text).__name__}")
        rows.texts.append(text)
        rows.lines.append(n)
        rows.ids.append(row_id)
    if not rows.texts:
        raise JobError(f"--input {path} has no texts")
    return rows


def check_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The input and output paths, checked before anything loads.

    Raises:
        JobError: a wrong suffix, a missing input, an output that is a folder, an existing
            output without ``--overwrite``, or a missing or unwritable output folder.
    """
    src, dst = Path(args.input), Path(args.output)
    if src.suffix not in INPUT_SUFFIXES:
        raise JobError(f"--input must end in {' or '.join(INPUT_SUFFIXES)}, got {src.name!r}")
    if dst.suffix not in OUTPUT_SUFFIXES:
        raise JobError(f"--output must end in {' or '.join(OUTPUT_SUFFIXES)}, got {dst.name!r}")
    if not src.is_file():
        raise JobError(f"--input {src} does not exist")
    if dst.is_dir():
        raise JobError(f"--output {dst} is a folder (give a .npy or .jsonl file)")
    if dst.exists() and not args.overwrite:
        raise JobError(f"--output {dst} exists (pass --overwrite to replace it)")
    if not dst.parent.is_dir():
        raise JobError(f"--output folder {dst.parent} does not exist")
    try:  # a file created and removed: os.access says yes to root on a read-only file system
        fd, probe = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise JobError(f"--output folder {dst.parent} is not writable ({exc.strerror or exc})") from exc
    return src, dst


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: Path, mode: str) -> Iterator[IO[Any]]:
    """A file that appears at ``path`` only when the block succeeds (temp file + rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # as open() would create it (mkstemp makes 0600)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


_POSITION = re.compile(r"\b(?:prompts|texts)\[(\d+)\]")
"""How the engine names an input: ``prompts[12]`` (or ``texts[12]``); other brackets in a
message (``[8]``, a list of Matryoshka dimensions) are not positions."""


def _line_of(message: str, rows: Rows) -> str:
    """An engine error naming ``prompts[i]`` with the input line of row ``i`` added."""
    found = _POSITION.search(message)
    if found and int(found.group(1)) < len(rows.lines):
        return f"input line {rows.lines[int(found.group(1))]}: {message}"
    return message


def check_options(args: argparse.Namespace) -> None:
    """The job's numeric options, checked before the model loads.

    Raises:
        JobError: ``--dimensions`` under 1, or ``--truncate-prompt-tokens`` neither -1 nor
            positive.
    """
    if args.dimensions is not None and args.dimensions < 1:
        raise JobError(f"--dimensions must be a positive integer, got {args.dimensions}")
    t = args.truncate_prompt_tokens
    if t is not None and t < 1 and t != -1:
        raise JobError(f"--truncate-prompt-tokens must be a positive integer or -1, got {t}")


def check_params(llm: Any, params: Any, truncate_prompt_tokens: int | None) -> None:
    """``params`` checked against the loaded model (``--dimensions`` against its Matryoshka
    sizes...) before any text is encoded, so a model-level error names no input line.

    Raises:
        JobError: the model has no ``embed`` task, or the engine rejects the options.
    """
    poolers = getattr(llm, "poolers", None)
    if poolers is None:
        return  # an engine without poolers: its own errors come from llm.embed
    try:
        # a model without an embed task (a reranker, a classifier): UnsupportedTaskError, a ValueError
        poolers.get("embed").resolve(params, truncate_prompt_tokens)
    except (ValueError, TypeError) as exc:
        raise JobError(str(exc)) from exc


def run(args: argparse.Namespace, llm_factory: Any) -> int:
    """Run the job; ``llm_factory()`` loads the engine (after the inputs are checked)."""
    import numpy as np

    from vllm_pool import PoolingParams
    from vllm_pool.engine.outputs import stack_outputs

    src, dst = check_paths(args)
    check_options(args)
    rows = read_rows(src, args.text_field, args.id_field)
    logger.info("read %d texts from %s", len(rows.texts), src)
    llm = llm_factory()
    prefix = _prefix(llm, args.instruction, args.prompt_name)
    # the prefix goes in as an instruction, as the integrations send it (see embed_texts); an
    # empty text too: a model whose ST Pooling says include_prompt=false pools no prompt token
    prompts: list[Any] = [{"prompt": t, "instruction": prefix} if prefix else t for t in rows.texts]
    params = PoolingParams(dimensions=args.dimensions, normalize=args.normalize)
    check_params(llm, params, args.truncate_prompt_tokens)
    try:
        outs = llm.embed(
            prompts,
            params,
            use_tqdm=not args.no_progress,
            truncate_prompt_tokens=args.truncate_prompt_tokens,
        )
    except (ValueError, TypeError) as exc:
        raise JobError(_line_of(str(exc), rows)) from exc
    vectors = stack_outputs(outs).numpy().astype(np.float32, copy=False)  # [rows, dim]
    try:
        write_output(dst, vectors, rows)
    except OSError as exc:  # a full disk, a folder created meanwhile...: no partial file is left
        raise JobError(f"cannot write --output {dst}: {exc}") from exc
    print(f"wrote {vectors.shape[0]} embeddings of dimension {vectors.shape[1]} to {dst}", flush=True)
    return 0


def write_output(dst: Path, vectors: Any, rows: Rows) -> None:
    """Write ``vectors`` (``[rows, dim]``) to ``dst`` (``.npy`` or ``.jsonl``) atomically."""
    import numpy as np

    if dst.suffix == ".npy":
        with atomic_file(dst, "wb") as f:
            np.save(f, vectors)
        return
    with atomic_file(dst, "w") as f:
        for line, row_id, vec in zip(rows.lines, rows.ids, vectors.tolist(), strict=True):
            record = {"line": line, "id": row_id, "embedding": vec}  # "id": null for a row without one
            f.write(json.dumps(record) + "\n")


def _prefix(llm: Any, instruction: str | None, prompt_name: str | None) -> str:
    """``--instruction``, else the model's ``--prompt-name`` prompt, else its default prompt
    (``default_prompt_name``), as ``SentenceTransformer.encode`` does."""
    if instruction is not None:
        return instruction
    st = getattr(llm.model_config, "st", None)
    prompts = dict(getattr(st, "prompts", None) or {})
    if prompt_name is None:
        default = getattr(st, "default_prompt_name", None)
        return prompts.get(default, "") if default else ""
    if prompt_name not in prompts:
        raise JobError(
            f"--prompt-name {prompt_name!r} is not a prompt of {llm.model_name} (it has {sorted(prompts)})"
        )
    return prompts[prompt_name]
