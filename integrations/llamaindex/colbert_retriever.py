"""`VllmPoolColBERTRetriever`: a LlamaIndex retriever over the ColBERT multi-vector index."""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle
from vllm_pool.retrievers import MultiVectorIndex
from vllm_pool.retrievers.index_base import NotCopyable
from vllm_pool.retrievers.types import check_k

from vllm_pool import DEFAULT_MODEL

from .. import _colbert
from .._engines import EngineOptions, EngineRef
from .._hf_names import capped_colbert_lengths, translate
from .._records import check_id_list
from ._filters import to_index_filter
from ._nodes import indexed_metadata, rebuild_node, ref_doc_node_ids


class VllmPoolColBERTRetriever(NotCopyable, _colbert.ColBERTSettings, BaseRetriever):
    """Late-interaction (ColBERT, MaxSim) retrieval with the engine's token embeddings.

    Build it with :meth:`from_nodes`, :meth:`from_documents` or :meth:`load`. Results are
    ``NodeWithScore`` objects: the nodes as they were added (id, text, metadata,
    relationships and ``ref_doc_id``, excluded LLM / embed metadata keys, kept as LlamaIndex's
    vector stores keep them; a ``Document`` comes back as a ``TextNode``), scored by MaxSim.
    Remove nodes with :meth:`delete` (node ids) or :meth:`delete_ref_doc` (a source document).

    Args:
        index: a ``vllm_pool.retrievers.MultiVectorIndex`` (default: a new empty one; another
            type is a ``TypeError``).
        model: a local model folder or a Hugging Face Hub id.
        similarity_top_k: nodes returned per query.
        filters: metadata filter: LlamaIndex ``MetadataFilters``, a LangChain FAISS-style
            dict (``{"year": {"$gte": 2023}}``) or a callable on the metadata.
        query_maxlen: query length in tokens (padded to it with ``mask_augment``). The encoder
            settings default (``None``) to the checkpoint's; a plain model's queries default to
            its ``max_model_len`` (no query expansion there).
        doc_maxlen: maximum document (window) length in tokens; 180, capped at the model's limit.
        query_marker: token after ``[CLS]`` in queries (colbert-ai: ``"[unused0]"``, PyLate: ``"[Q] "``).
        doc_marker: token after ``[CLS]`` in documents (colbert-ai: ``"[unused1]"``, PyLate: ``"[D] "``).
        mask_augment: pad queries with ``[MASK]`` (ColBERT checkpoints: on; plain models: off).
        attend_to_expansion_tokens: attend to the ``[MASK]`` tokens (colbert-ai / PyLate: off).
        skip_punctuation: drop punctuation (skiplist) token vectors from documents (on).
        skiplist_words: tokens to skip in documents (PyLate's; default: punctuation).
        normalize: L2-normalize the token vectors (on).
        split_long_documents: index documents longer than ``doc_maxlen`` as overlapping
            windows under their id (hits merged per node); else they are cut, with a warning.
        window_overlap: tokens shared by consecutive windows.
        truncate: cut documents over ``doc_maxlen`` (on); off, such a document is an error
            (unless ``split_long_documents``), as the other classes' ``truncate`` field.
        dtype: weights dtype (``"auto"``...).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        max_model_len: token limit of the model.
        trust_remote_code: allow custom model code.
        engine_kwargs: other ``vllm_pool.LLM`` options.
        index_kwargs: options of a new ``MultiVectorIndex``.
        batch_size: documents per engine call when adding.
        show_progress: show a progress bar when adding.
        callback_manager: LlamaIndex callbacks.
        verbose: LlamaIndex's verbose flag.
        **huggingface_names: HuggingFace / PyLate / RAGatouille spellings of the arguments above
            (``model_name``, ``model_kwargs={"device": ...}``, ``show_progress_bar``,
            ``document_length``...); any other name raises ``TypeError``.

    Example:
        >>> retriever = VllmPoolColBERTRetriever.from_documents(docs, similarity_top_k=3)  # doctest: +SKIP
        >>> engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM())  # doctest: +SKIP
    """

    def __init__(
        self,
        index: MultiVectorIndex | None = None,
        *,
        model: str = DEFAULT_MODEL,
        similarity_top_k: int = 4,
        filters: Any = None,
        query_maxlen: int | None = None,
        doc_maxlen: int | None = None,
        query_marker: str | None = None,
        doc_marker: str | None = None,
        mask_augment: bool | None = None,
        attend_to_expansion_tokens: bool | None = None,
        skip_punctuation: bool | None = None,
        skiplist_words: Sequence[str] | None = None,
        normalize: bool | None = None,
        split_long_documents: bool = False,
        window_overlap: int = 32,
        truncate: bool = True,
        dtype: str = "auto",
        device: str = "auto",
        max_model_len: int | None = None,
        trust_remote_code: bool = False,
        engine_kwargs: Mapping[str, Any] | None = None,
        index_kwargs: Mapping[str, Any] | None = None,
        batch_size: int = 64,
        show_progress: bool = False,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        **huggingface_names: Any,
    ) -> None:
        if index is not None and not isinstance(index, MultiVectorIndex):  # before the model loads
            raise TypeError(
                f"index must be a vllm_pool.retrievers.MultiVectorIndex or None, got {type(index).__name__}"
            )
        if huggingface_names:  # model_name=, model_kwargs=, max_length=... as the arguments above
            params = inspect.signature(VllmPoolColBERTRetriever.__init__).parameters
            given = {
                name: value
                for name, value in locals().items()
                if name in params and name not in ("self", "index", "huggingface_names")
                and not (value is params[name].default or value == params[name].default)
            }  # fmt: skip
            args = translate(type(self).__name__, params, {**given, **huggingface_names}, TypeError)
            type(self).__init__(self, index, **args)
            return
        self.model = model
        self.similarity_top_k = check_k(similarity_top_k, "similarity_top_k")  # not at the first query
        self.filters = to_index_filter(filters)
        self.batch_size = check_k(batch_size, "batch_size")
        self.show_progress = show_progress
        self._engine = EngineRef(
            EngineOptions.make(model, dtype, device, max_model_len, trust_remote_code, engine_kwargs)
        )
        self.split_long_documents = split_long_documents
        self.window_overlap = window_overlap
        self.truncate = truncate
        settings = {
            "query_maxlen": query_maxlen,
            "doc_maxlen": doc_maxlen,
            "query_marker": query_marker,
            "doc_marker": doc_marker,
            "mask_augment": mask_augment,
            "attend_to_expansion_tokens": attend_to_expansion_tokens,
            "skip_punctuation": skip_punctuation,
            "skiplist_words": skiplist_words,
            "normalize": normalize,
        }
        llm = self._engine.llm
        self._resolve_colbert(capped_colbert_lengths(llm, settings, type(self).__name__))
        self.index = index if index is not None else _colbert.new_index(llm, index_kwargs)
        if self.index.dim != llm.embedding_dim:
            raise ValueError(
                f"the index holds {self.index.dim}-d vectors but {model} gives {llm.embedding_dim}-d vectors"
            )
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @property
    def llm(self) -> Any:
        """The shared ``vllm_pool.LLM``."""
        return self._engine.llm

    # -- building ------------------------------------------------------------------------
    @classmethod
    def from_nodes(cls, nodes: Sequence[BaseNode], **kwargs: Any) -> VllmPoolColBERTRetriever:
        """Encode and index nodes (``kwargs``: constructor arguments)."""
        retriever = cls(**kwargs)
        retriever.add_nodes(nodes)
        return retriever

    @classmethod
    def from_documents(cls, documents: Sequence[BaseNode], **kwargs: Any) -> VllmPoolColBERTRetriever:
        """Encode and index documents whole (split them first with a node parser for long ones)."""
        return cls.from_nodes(documents, **kwargs)

    def add_nodes(self, nodes: Sequence[BaseNode]) -> list[str]:
        """Add nodes (an existing id is overwritten); return their ids.

        The text encoded is the node's embedding view (``MetadataMode.EMBED``); the text
        stored and returned is its plain content, and the rest of the node is stored with it.
        """
        if isinstance(nodes, (str, BaseNode)):
            raise TypeError(f"nodes must be a list of nodes, not a single {type(nodes).__name__}")
        nodes = list(nodes)
        for i, node in enumerate(nodes):
            if not isinstance(node, BaseNode):
                kind = type(node).__name__
                raise TypeError(f"nodes[{i}] must be a LlamaIndex node (TextNode, Document), got {kind}")
        return _colbert.add_texts(
            self.index,
            self.encoder,
            [n.get_content(metadata_mode=MetadataMode.NONE) for n in nodes],
            [indexed_metadata(n) for n in nodes],
            [n.node_id for n in nodes],
            self.batch_size,
            self.show_progress,
            encode_texts=[n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes],
            split_long_documents=self.split_long_documents,
            window_overlap=self.window_overlap,
            truncate=self.truncate,
        )

    def delete(self, ids: Sequence[str]) -> int:
        """Remove nodes by id (missing ids are ignored); return how many were removed.

        Raises:
            TypeError: ``ids`` is a single string (``delete("12")`` is not ``["1", "2"]``).
        """
        check_id_list(ids)
        return _colbert.delete(self.index, ids)

    def delete_ref_doc(self, ref_doc_id: str) -> int:
        """Remove every node of a source document (LlamaIndex's ``delete_ref_doc``): the nodes
        whose ``ref_doc_id`` it is, and a ``Document`` added whole under that id. Nodes added
        before nodes were stored whole (an older saved index) carry no reference and stay.

        Returns:
            How many nodes were removed.
        """
        if not isinstance(ref_doc_id, str):
            raise TypeError(f"ref_doc_id must be a string, got {type(ref_doc_id).__name__}")
        ids = ref_doc_node_ids(self.index, ref_doc_id)
        return _colbert.delete(self.index, ids) if ids else 0

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Save the index, the model id, its dimension and the encoder settings to the folder
        ``path`` (no pickle)."""
        _colbert.save(path, self.index, _colbert.settings_of(self))

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs: Any) -> VllmPoolColBERTRetriever:
        """Load a retriever saved by :meth:`save` (``kwargs`` set or override arguments).

        Raises:
            ValueError: a model or encoder setting in ``kwargs`` that differs from the saved one.
        """
        index, args = _colbert.load_arguments(path, kwargs)
        return cls(index, **args)

    # -- retrieval -----------------------------------------------------------------------
    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = _colbert.search(
            self.index, self.encoder, query_bundle.query_str, self.similarity_top_k, self.filters
        )
        return [
            NodeWithScore(node=rebuild_node(doc_id, text, meta), score=score)
            for doc_id, text, meta, score in hits
        ]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)
