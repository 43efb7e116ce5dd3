"""What a user migrating from langchain-huggingface / llama-index HuggingFace classes and
SentenceTransformerRerank writes, against our classes, and the ``vllm-pool`` command-line
batch job (issue 16 items 1, 6, 7, 9).

References: Sentence Transformers on the same folders (what ``HuggingFaceEmbeddings`` and
``HuggingFaceEmbedding`` run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tiny_models

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.documents import Document  # noqa: E402
from llama_index.core.schema import Document as LIDocument  # noqa: E402
from llama_index.core.schema import NodeWithScore, TextNode  # noqa: E402
from vllm_pool.integrations import _rerank_inputs  # noqa: E402
from vllm_pool.integrations.langchain import (  # noqa: E402
    VllmPoolColBERTReranker,
    VllmPoolColBERTRetriever,
    VllmPoolEmbeddings,
    VllmPoolReranker,
)
from vllm_pool.integrations.llamaindex import (  # noqa: E402
    VllmPoolColBERTRerank,
    VllmPoolEmbedding,
    VllmPoolRerank,
)
from vllm_pool.integrations.llamaindex import VllmPoolColBERTRetriever as LIColBERTRetriever  # noqa: E402

PROMPTS = {"query": "query: ", "document": "passage: "}
DOCS = [
    "paris is the capital of france",
    "the cat sat on the mat",
    "python functions and classes " * 6,
    "a river runs through the city",
]
QUERY = "which city is the capital of france"
CLOSE = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    """A tiny Sentence Transformers folder (16-d, not the default model's 384-d), with prompts."""
    base = tiny_models.bert(tmp_path_factory.mktemp("migbase") / "bert")
    return str(tiny_models.sentence_transformer(
        tmp_path_factory.mktemp("mig") / "st", base, pooling="mean", dense_out=16, prompts=PROMPTS,
    ))  # fmt: skip


@pytest.fixture(scope="module")
def st(folder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(folder, device="cpu")


# -- item 1: HuggingFace names ------------------------------------------------------------
def test_langchain_huggingface_embeddings_call(folder, st):
    emb = VllmPoolEmbeddings(
        model_name=folder,
        model_kwargs={"device": "cpu", "trust_remote_code": False},
        encode_kwargs={"batch_size": 2, "normalize_embeddings": True, "prompt_name": "document"},
        query_encode_kwargs={"prompt_name": "query"},
        show_progress_bar=False,
    )
    assert emb.model == folder and emb.device == "cpu" and emb.batch_size == 2 and emb.normalize is True
    assert emb.llm.model_name == folder  # the named model is the one loaded
    docs = st.encode(DOCS, prompt_name="document", normalize_embeddings=True)
    np.testing.assert_allclose(emb.embed_documents(DOCS), docs, **CLOSE)
    np.testing.assert_allclose(emb.embed_query(QUERY), st.encode(QUERY, prompt_name="query"), **CLOSE)


def test_max_length_truncates_like_sentence_transformers(folder, st):
    emb = VllmPoolEmbeddings(model_name=folder, max_length=6)
    assert emb.truncate_prompt_tokens == 6
    old = st.max_seq_length
    st.max_seq_length = 6
    try:
        ref = st.encode(DOCS, prompt_name="document")
    finally:
        st.max_seq_length = old
    np.testing.assert_allclose(emb.embed_documents(DOCS), ref, **CLOSE)
    assert not np.allclose(ref, st.encode(DOCS, prompt_name="document"), atol=1e-4)  # the cut mattered


def test_llamaindex_huggingface_embedding_call(folder, st):
    emb = VllmPoolEmbedding(
        model_name=folder, max_length=64, query_instruction="find: ", text_instruction="doc: ",
        embed_batch_size=2, device="cpu", show_progress_bar=False,
    )  # fmt: skip
    assert emb.model == folder and emb.model_name == folder and emb.llm.model_name == folder
    np.testing.assert_allclose(emb.get_query_embedding(QUERY), st.encode(QUERY, prompt="find: "), **CLOSE)
    np.testing.assert_allclose(emb.get_text_embedding_batch(DOCS), st.encode(DOCS, prompt="doc: "), **CLOSE)


@pytest.mark.parametrize(
    "cls",
    [VllmPoolEmbeddings, VllmPoolReranker, VllmPoolColBERTReranker, VllmPoolColBERTRetriever,
     VllmPoolEmbedding, VllmPoolRerank, VllmPoolColBERTRerank, LIColBERTRetriever],
    ids=lambda c: f"{c.__module__.split('.')[-2]}.{c.__name__}",
)  # fmt: skip
def test_model_name_is_an_alias_of_model_in_every_class(cls, folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bi-encoder reranker warning
        obj = cls(model_name=folder, model_kwargs={"device": "cpu"})
    assert obj.model == folder
    assert obj.llm.model_name == folder and obj.llm.embedding_dim == 16


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"multi_process": True}, ["multi_process", "device="]),
        ({"cache_folder": "/tmp/x"}, ["cache_folder", "model="]),
        ({"encode_kwargs": {"convert_to_numpy": True, "bogus": 1}}, ["encode_kwargs['bogus']", "batch_size"]),
        ({"encode_kwargs": {"precision": "binary"}}, ["precision"]),
        ({"model_kwargs": {"token": "x"}}, ["HF_TOKEN"]),
        ({"modle_name": "x"}, ["modle_name", "model_name"]),
        ({"model": "a", "model_name": "b"}, ["model_name", "model"]),
        ({"batch_size": 4, "encode_kwargs": {"batch_size": 8}}, ["batch_size"]),
    ],
)
@pytest.mark.parametrize("cls", [VllmPoolEmbeddings, VllmPoolEmbedding])
def test_rejected_names_say_what_to_use(cls, kwargs, names):
    with pytest.raises(ValueError) as exc:
        cls(**kwargs)
    for name in names:
        assert name in str(exc.value)


def test_colbert_retriever_spellings(folder):
    lc = VllmPoolColBERTRetriever(
        model_name=folder, document_length=20, query_length=12, show_progress_bar=True
    )
    li = LIColBERTRetriever(model_name=folder, max_length=20, query_length=12, batch_size=2)
    for r in (lc, li):
        assert r.colbert_config.doc_maxlen == 20 and r.colbert_config.query_maxlen == 12
    assert lc.show_progress is True and li.batch_size == 2
    with pytest.raises(TypeError, match="did you mean"):
        LIColBERTRetriever(model_name=folder, doc_maxln=3)


@pytest.mark.parametrize("cls", [VllmPoolReranker, VllmPoolColBERTRetriever, LIColBERTRetriever])
@pytest.mark.parametrize("name", ["query_instruction", "show_progres", "doc_maxln", "normalise"])
def test_unknown_name_hints_only_names_the_class_takes(cls, name):
    import inspect

    from vllm_pool.integrations._hf_names import translate

    fields = list(getattr(cls, "model_fields", None) or inspect.signature(cls.__init__).parameters)
    try:
        translate(cls.__name__, fields, {name: 1}, unknown_error=TypeError)
    except TypeError as exc:
        hint = str(exc).partition("did you mean ")[2].rstrip("?")
    else:
        return  # a spelling the class takes
    for suggested in filter(None, hint.split(" or ")):
        translate(cls.__name__, fields, {suggested: 1})  # each suggestion is accepted


# -- item 6: rerankers -------------------------------------------------------------------
def test_bi_encoder_reranker_warns_once(folder):
    _rerank_inputs._warned.discard(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        VllmPoolReranker(model=folder)
        VllmPoolRerank(model=folder)
        VllmPoolColBERTReranker(model=folder)  # MaxSim on token vectors: no warning
    bi = [w for w in caught if "bi-encoder" in str(w.message)]
    assert len(bi) == 1 and folder in str(bi[0].message)


@pytest.mark.parametrize("cls", [VllmPoolReranker, VllmPoolColBERTReranker])
@pytest.mark.parametrize("top_n", [-1, 0, 1.5])
def test_langchain_top_n_is_checked(cls, top_n, folder):
    with pytest.raises(ValueError, match="top_n must be a positive integer or None"):
        cls(model=folder, top_n=top_n)
    reranker = cls(model=folder, top_n=2)
    reranker.top_n = 0  # changed after construction: checked at the call
    with pytest.raises(ValueError, match="top_n"):
        reranker.compress_documents([Document(page_content=d) for d in DOCS], QUERY)


@pytest.mark.parametrize("cls", [VllmPoolReranker, VllmPoolColBERTReranker])
def test_langchain_rerankers_take_documents_and_refuse_strings(cls, folder):
    reranker = cls(model=folder, top_n=None)
    docs = [Document(page_content=d, metadata={"i": i}) for i, d in enumerate(DOCS)]
    by_text = reranker.rerank(DOCS, QUERY)
    assert reranker.rerank(docs, QUERY) == by_text and len(by_text) == len(DOCS)
    out = reranker.compress_documents(docs, QUERY)
    assert [d.metadata["i"] for d in out] == [i for i, _ in by_text]
    with pytest.raises(TypeError, match=r"documents\[0\] is a str.*Document\(page_content=text\)"):
        reranker.compress_documents(DOCS, QUERY)
    with pytest.raises(TypeError, match=r"documents\[1\] must be a string, a LangChain Document"):
        reranker.rerank(["a", 3], QUERY)


def test_llamaindex_sentence_transformer_rerank_call(folder):
    # SentenceTransformerRerank(top_n=, model=, device=, keep_retrieval_score=, trust_remote_code=)
    rerank = VllmPoolRerank(
        top_n=2, model=folder, device="cpu", keep_retrieval_score=True, trust_remote_code=False,
        cross_encoder_kwargs={"max_length": 32},
    )  # fmt: skip
    assert rerank.truncate_prompt_tokens == 32
    scored = [NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.5) for i, d in enumerate(DOCS)]
    ref = rerank.postprocess_nodes(scored, query_str=QUERY)
    bare = rerank.postprocess_nodes([TextNode(text=d, id_=str(i)) for i, d in enumerate(DOCS)], None, QUERY)
    docs = rerank.postprocess_nodes([LIDocument(text=d, id_=str(i)) for i, d in enumerate(DOCS)], None, QUERY)
    assert [n.node.node_id for n in bare] == [n.node.node_id for n in ref] == [n.node.node_id for n in docs]
    np.testing.assert_allclose([n.score for n in bare], [n.score for n in ref], **CLOSE)
    assert ref[0].node.metadata["retrieval_score"] == 0.5
    with pytest.raises(TypeError, match=r"nodes\[0\] must be a NodeWithScore.*TextNode\(text=\.\.\.\)"):
        rerank.postprocess_nodes(DOCS, query_str=QUERY)
    with pytest.raises(ValueError):
        VllmPoolRerank(model=folder, top_n=0)


# -- item 7: one progress bar per call ---------------------------------------------------
class _Bars:
    """Records every tqdm bar made (in place of ``tqdm``)."""

    def __init__(self) -> None:
        self.made: list[_Bars.Bar] = []

    class Bar:
        def __init__(self, iterable=None, total=None, **kwargs) -> None:
            self.iterable, self.total, self.n, self.kwargs = iterable, total, 0, kwargs

        def update(self, n: int = 1) -> None:
            self.n += n

        def __iter__(self):
            for item in self.iterable:
                self.n += 1
                yield item

        def close(self) -> None:
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            pass

    def __call__(self, *args, **kwargs):
        bar = _Bars.Bar(*args, **kwargs)
        self.made.append(bar)
        return bar


@pytest.fixture
def bars(monkeypatch, folder) -> _Bars:
    import tqdm.auto

    VllmPoolEmbeddings(model=folder).embed_query("load the engine before bars are recorded")
    import vllm_pool.engine.progress

    record = _Bars()
    monkeypatch.setattr(tqdm.auto, "tqdm", record)
    monkeypatch.setattr(vllm_pool.engine.progress, "tqdm", record)
    return record


def test_langchain_embed_documents_shows_one_bar(folder, bars):
    emb = VllmPoolEmbeddings(model=folder, batch_size=3, show_progress=True)
    texts = [f"text number {i}" for i in range(20)]  # 7 engine calls
    emb.embed_documents(texts)
    assert [(b.total, b.n) for b in bars.made] == [(20, 20)]
    emb.embed_query("no bar for a query")
    assert len(bars.made) == 1


def test_llamaindex_batch_shows_one_bar(folder, bars, monkeypatch):
    import llama_index.core.base.embeddings.base as li_base

    monkeypatch.setattr(li_base, "get_tqdm_iterable", lambda items, show, _: bars(items) if show else items)
    emb = VllmPoolEmbedding(model=folder, embed_batch_size=3, show_progress=True)
    emb.get_text_embedding_batch([f"text number {i}" for i in range(20)])
    assert [(b.n) for b in bars.made] == [20]  # LlamaIndex's bar only: none per engine call
    emb.get_query_embedding("no bar")
    assert len(bars.made) == 1


def test_colbert_add_shows_one_bar(folder, bars):
    retriever = VllmPoolColBERTRetriever(model=folder, batch_size=2, show_progress=True)
    retriever.add_texts([f"document {i}" for i in range(7)])
    assert [(b.total, b.n) for b in bars.made] == [(7, 7)]


@pytest.fixture(scope="module")
def llm(folder):
    from vllm_pool import LLM

    return LLM(folder)  # loaded before the bars are recorded (loading has bars of its own)


def test_llm_one_bar_over_tokenizer_chunks(llm, bars):
    llm.tokenize_chunk = 4  # the input is tokenized and run in 5 chunks
    texts = [f"text {i}" for i in range(18)]
    llm.embed(texts, use_tqdm=True)
    assert [(b.total, b.n) for b in bars.made] == [(18, 18)]
    made = []
    llm.embed(texts, use_tqdm=lambda **kw: made.append(kw) or _Bars.Bar(**kw))  # vLLM's callable form
    assert made == [{"total": 18, "desc": "Processed prompts", "unit": "prompt"}]


# -- item 9: the command line ------------------------------------------------------------
def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vllm_pool.cli", *argv], capture_output=True, text=True)


def test_cli_version():
    import vllm_pool

    out = _cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"vllm-pool {vllm_pool.__version__}"


def test_every_help_shows_defaults():
    from vllm_pool import EngineArgs
    from vllm_pool.cli import _HelpFormatter, build_parser

    subs = next(a for a in build_parser()._actions if a.dest == "command").choices
    for name in ("embed", "serve"):
        parser = subs[name]
        flags = {s for a in parser._actions for s in a.option_strings}
        assert {"--" + n.replace("_", "-") for n in EngineArgs.names() if n != "model"} <= flags
        fmt = _HelpFormatter(name)
        for action in parser._actions:
            if action.dest == "help" or action.required:
                continue
            assert "default" in fmt._get_help_string(action), (name, action.dest)
    assert "(default: 8000)" in subs["serve"].format_help()
    assert "(default: text)" in subs["embed"].format_help()


def test_cli_embed_txt_to_npy_and_jsonl_to_jsonl(folder, st, tmp_path):
    (tmp_path / "in.txt").write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    out = _cli("embed", folder, "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "out.npy"),
               "--device", "cpu", "--max-num-seqs", "2")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Processed prompts" in out.stderr  # the progress bar
    got = np.load(tmp_path / "out.npy")
    assert got.dtype == np.float32 and got.shape == (len(DOCS), 16)
    np.testing.assert_allclose(got, st.encode(DOCS), **CLOSE)

    rows = [{"id": "a", "text": DOCS[0]}, DOCS[1], {"text": DOCS[2], "id": 7}]
    lines = [json.dumps(rows[0]), "", json.dumps(rows[1]), json.dumps(rows[2])]  # a blank line is skipped
    (tmp_path / "in.jsonl").write_text("\n".join(lines), encoding="utf-8")
    out = _cli("embed", folder, "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"),
               "--prompt-name", "query", "--no-progress")  # fmt: skip
    assert out.returncode == 0, out.stderr
    records = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["line"], r.get("id")) for r in records] == [(1, "a"), (3, None), (4, 7)]
    ref = st.encode(DOCS[:3], prompt_name="query")
    np.testing.assert_allclose([r["embedding"] for r in records], ref, **CLOSE)


def test_cli_embed_bad_line_fails_before_loading(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "ok"}\n\n{"txt": "no text key"}\n', encoding="utf-8")
    out = _cli("embed", "/no/such/model", "-i", str(src), "-o", str(tmp_path / "out.npy"))
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        f"vllm-pool embed: {src} line 3: no 'text' key (keys: ['txt']); see --text-field"
    )
    assert list(tmp_path.iterdir()) == [src]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": 3}', "line 1: 'text' must be a string, got int"),
        ("[1, 2]", "line 1: expected a JSON object or string, got list"),
        ('"fine"\n{oops', "line 2: not valid JSON"),
    ],
)
def test_embed_job_input_errors_name_the_line(tmp_path, content, message):
    from vllm_pool.embed_job import JobError, read_rows

    (tmp_path / "in.jsonl").write_text(content, encoding="utf-8")
    with pytest.raises(JobError, match=message):
        read_rows(tmp_path / "in.jsonl")


def _job_args(tmp_path: Path):
    from vllm_pool.cli import build_parser

    (tmp_path / "in.txt").write_text("first\nsecond\nthird\n", encoding="utf-8")
    argv = ["embed", "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.npy"), "--no-progress"]
    return build_parser().parse_args(argv)


def test_embed_job_output_is_atomic(llm, tmp_path, monkeypatch):
    from vllm_pool import embed_job

    args = _job_args(tmp_path)

    def broken_save(f, array):
        f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", broken_save)
    with pytest.raises(embed_job.JobError, match="disk full"):  # one line, no traceback
        embed_job.run(args, lambda: llm)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]  # no output, no temporary file


def test_embed_job_engine_errors_name_the_input_line(tmp_path):
    from vllm_pool import embed_job

    class Failing:
        model_config = None

        def embed(self, prompts, params, **kwargs):
            raise ValueError("prompts[2] is empty: it has no tokens")

    with pytest.raises(embed_job.JobError, match=r"^input line 3: prompts\[2\] is empty"):
        embed_job.run(_job_args(tmp_path), Failing)


def test_cli_rows_split_on_newlines_only_and_outputs_follow_the_umask(tmp_path):
    from vllm_pool.embed_job import atomic_file, read_rows

    texts = ["first", "form\x0cfeed and line\u2028separator", "next\x85line", "last"]
    (tmp_path / "in.txt").write_text("\r\n".join(texts) + "\n", encoding="utf-8")
    rows = read_rows(tmp_path / "in.txt")
    assert rows.texts == texts and rows.lines == [1, 2, 3, 4]
    lines = [json.dumps({"text": t}, ensure_ascii=False) for t in texts]
    (tmp_path / "in.jsonl").write_text("\n".join(lines), encoding="utf-8")  # no final newline
    assert read_rows(tmp_path / "in.jsonl").texts == texts

    old = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "out.jsonl", "w") as f:
            f.write("{}\n")
        reference = tmp_path / "plain.txt"
        reference.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "out.jsonl").stat().st_mode & 0o777 == reference.stat().st_mode & 0o777 == 0o644


def test_spec_spelling_of_the_colbert_retriever():
    """``product.md`` names ``VllmPoolColbertRetriever``: both packages export it, the same class."""
    from vllm_pool.integrations import langchain, llamaindex

    assert langchain.VllmPoolColbertRetriever is langchain.VllmPoolColBERTRetriever
    assert llamaindex.VllmPoolColbertRetriever is llamaindex.VllmPoolColBERTRetriever
    assert all("VllmPoolColbertRetriever" in m.__all__ for m in (langchain, llamaindex))
