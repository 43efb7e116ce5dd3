"""``VllmPoolVectorStore``'s options, checked before anything is embedded.

The options of the ``DenseIndex`` a store creates on its first add are named by
``DenseIndex``'s signature and checked by the index's own checks; LangChain FAISS's options
get an error that says what to do here; and an index's vectors must suit the embeddings'
similarity: cosine scores L2-normalized vectors (``normalize=True``), dot, euclidean and
manhattan score the raw ones (``normalize=False``).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

FAISS_OPTIONS = {
    "distance_strategy": "the similarity is the embeddings' similarity_fn_name ('cosine', 'dot', "
    "'euclidean' or 'manhattan'; {similarity!r} for these embeddings): VllmPoolEmbeddings reads the "
    "model's, other embeddings are scored by cosine unless they have a similarity_fn_name attribute",
    "normalize_L2": "vectors are L2-normalized exactly when the similarity (the embeddings' "
    "similarity_fn_name, {similarity!r} for these embeddings) is cosine",
    "relevance_score_fn": "similarity_search_with_relevance_scores maps the scores of the similarity "
    "({similarity!r} for these embeddings) to [0, 1]; for another map, override "
    "_select_relevance_score_fn (LangChain VectorStore's hook) in a subclass, or apply it to the scores "
    "of similarity_search_with_score",
}
"""LangChain FAISS's constructor options, and how the store does without them."""

NORMALIZED = "cosine scores L2-normalized vectors; dot, euclidean and manhattan the raw ones"


def similarity_of(embeddings: Any) -> str:
    """The similarity of ``embeddings``: its ``similarity_fn_name``, else cosine."""
    return str(getattr(embeddings, "similarity_fn_name", None) or "cosine")


def index_options() -> dict[str, Any]:
    """The options of a new ``DenseIndex`` (all but ``dim``), with their defaults."""
    from vllm_pool.retrievers import DenseIndex

    params = inspect.signature(DenseIndex.__init__).parameters
    return {name: p.default for name, p in params.items() if name not in ("self", "dim")}


def check_index_options(owner: str, given: Mapping[str, Any], similarity: Callable[[], str]) -> None:
    """Check the options of the store's future ``DenseIndex`` as the index would at its first add.

    Args:
        owner: the class name, for error messages.
        given: the options as passed.
        similarity: gives the embeddings' similarity function name.

    Raises:
        TypeError: a name that is no option of ``DenseIndex`` (with the closest names), or a
            value of the wrong type.
        ValueError: a LangChain FAISS option (the message says what to do here), a bad value,
            or a ``normalize`` that contradicts the similarity.
        RuntimeError: ``use_gpu=True`` where FAISS sees no GPU.
    """
    from vllm_pool.retrievers.arrays import as_float32_matrix
    from vllm_pool.retrievers.faiss_index import check_faiss_settings, choose_gpu
    from vllm_pool.retrievers.quantized_search import check_settings

    for name in given:
        if name in FAISS_OPTIONS:
            hint = FAISS_OPTIONS[name].format(similarity=similarity())
            raise ValueError(
                f"{owner}: {name}= is an option of LangChain's FAISS store, not of this one: {hint}"
            )
    options = index_options()
    for name in given:
        if name not in options:
            close = difflib.get_close_matches(name, list(options), n=3, cutoff=0.6)
            hint = (
                f"; did you mean {' or '.join(close)}?" if close else f"; the options are {sorted(options)}"
            )
            raise TypeError(f"{owner} got an unknown option {name!r}{hint}")
    values = {**options, **given}
    check_index_type(values["index_type"])
    check_settings(values["storage"], values["index_type"], values["rescore_multiplier"], values["rescore"])
    check_faiss_settings(values["nlist"], values["nprobe"], values["hnsw_m"], values["ef_search"])
    if values["use_gpu"] is not None:
        choose_gpu(values["use_gpu"])
    if values["calibration_embeddings"] is not None:
        as_float32_matrix(values["calibration_embeddings"], None, "calibration_embeddings")
    if "normalize" in given:
        normalize = given["normalize"]
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be True or False, got {type(normalize).__name__} {normalize!r}")
        name = similarity()
        needed = name == "cosine"
        if normalize != needed:
            raise ValueError(
                f"cannot build a store of vectors with normalize={normalize} for embeddings of similarity "
                f"{name!r}, which need normalize={needed} ({NORMALIZED}): leave normalize out, the "
                "similarity sets it"
            )


def check_index_type(index_type: Any) -> None:
    """Check ``index_type`` before the first add builds the FAISS index: a short name, or a
    string ``faiss.index_factory`` can parse (whether it suits the dimension is known then).

    Raises:
        TypeError: not a non-empty string.
        ValueError: a string FAISS cannot parse.
    """
    import faiss
    from vllm_pool.retrievers.faiss_index import NAMED_TYPES

    kinds = f"{', '.join(map(repr, NAMED_TYPES))} or a faiss.index_factory string"
    if not isinstance(index_type, str) or not index_type:
        raise TypeError(f"index_type must be {kinds}, got {index_type!r}")
    if index_type.lower() in NAMED_TYPES:
        return
    try:
        faiss.index_factory(64, index_type, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:  # only a parse error is certain before the dimension is known
        if "could not parse" in str(exc):
            detail = str(exc).strip().splitlines()[-1].split(": ")[-1]
            raise ValueError(f"index_type must be {kinds}, got {index_type!r} (FAISS: {detail})") from exc


def check_index_similarity(index: Any, similarity: str, where: str = "") -> None:
    """Check that ``index`` holds vectors the similarity scores (normalized for cosine only).

    Args:
        index: a ``DenseIndex``.
        similarity: the embeddings' similarity function name.
        where: the folder it was loaded from, for the message.

    Raises:
        ValueError: the index's ``normalize`` contradicts the similarity.
    """
    saved, needed = index.config["normalize"], similarity == "cosine"
    if saved != needed:
        prefix = f"{where}: " if where else ""
        raise ValueError(
            f"{prefix}cannot use an index of {index.dim}-d vectors (normalize={saved}) with embeddings of "
            f"similarity {similarity!r}, which need normalize={needed} ({NORMALIZED}): use the "
            "embeddings (similarity_fn_name) the index was built with"
        )
