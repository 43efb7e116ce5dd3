"""The real engine's token_embed on all-MiniLM-L6-v2 (packaged, offline), end to end.

Skipped when the engine or the packaged model is not available.
"""

import pytest

PASSAGES = [
    "json.loads parses a JSON string and returns the Python object.",
    "subprocess.run executes a shell command and can capture its output.",
    "os.listdir returns the names of the entries in a directory.",
    "random.shuffle shuffles a list in place.",
    "datetime.strptime parses a date string according to a format.",
    "re.sub replaces every match of a regular expression pattern.",
    "csv.reader iterates over the rows of a comma separated values file.",
    "math.sqrt returns the square root of a number.",
    "threading.Lock is a mutual exclusion lock for threads.",
    "pathlib.Path.mkdir creates a new directory at the given path.",
    "collections.Counter counts hashable objects like words in a text.",
    "itertools.chain joins several iterables into one sequence.",
    "shutil.copy copies a file to another location.",
    "time.sleep suspends execution for a number of seconds.",
    "hashlib.sha256 computes a SHA-256 digest of bytes.",
    "urllib.request.urlopen downloads the content of a URL.",
    "zipfile.ZipFile reads and writes zip archives.",
    "argparse parses command line arguments and options.",
    "logging.getLogger returns a logger to record log messages.",
    "sqlite3.connect opens a connection to an SQLite database file.",
    "heapq.heappush pushes an item onto a priority queue heap.",
    "functools.lru_cache memoizes the results of a function.",
    "str.split breaks a string into a list of words.",
    "sorted returns a new sorted list from an iterable.",
    "enumerate yields pairs of an index and an item.",
    "socket.socket creates a network socket for TCP connections.",
    "tempfile.mkdtemp creates a temporary directory.",
    "uuid.uuid4 generates a random unique identifier.",
    "base64.b64encode encodes bytes as base64 text.",
    "statistics.mean computes the arithmetic average of numbers.",
]


@pytest.fixture(scope="module")
def llm():
    try:
        from vllm_pool import LLM

        return LLM("sentence-transformers/all-MiniLM-L6-v2")
    except Exception as exc:  # engine incomplete or model not packaged here
        pytest.skip(f"engine / all-MiniLM-L6-v2 not available: {exc}")


def test_colbert_search_with_minilm_token_embed(llm, tmp_path):
    from vllm_pool.retrievers import ColBERTEncoder, MultiVectorIndex

    enc = ColBERTEncoder.from_llm(llm)
    index = MultiVectorIndex.from_texts(PASSAGES, enc, ids=[f"p{i}" for i in range(len(PASSAGES))])
    assert index.dim == 384 and index.model_name == llm.model_name
    queries = [
        "How do I parse a JSON string?",
        "compute the square root of a number",
        "make a temporary directory",
    ]
    results = index.search(enc.encode_queries(queries), k=3)
    assert [r[0].id for r in results] == ["p0", "p7", "p26"]
    index.save(tmp_path / "idx")
    loaded = MultiVectorIndex.load(tmp_path / "idx", expected_dim=384)
    assert [r[0].id for r in loaded.search(enc.encode_queries(queries), k=3)] == ["p0", "p7", "p26"]


def test_dense_search_with_minilm_embed(llm):
    from vllm_pool.retrievers import DenseIndex, EngineTextEmbedder

    emb = EngineTextEmbedder(llm)
    index = DenseIndex.from_texts(PASSAGES, emb)
    hits = index.search(emb.embed_texts(["count the words in a text"]), k=1)
    assert hits[0][0].id == "10"
