"""String ids <-> integer slots, and per-document metadata.

Each stored document gets a fresh int64 *slot* (never reused) that the FAISS indexes use
as their label; the registry maps it back to the caller's string id and metadata.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterable, Sequence

import numpy as np
from vllm_pool.engine.inputs import check_unicode

from .filters import compile_filter
from .types import Filter, Metadata


def check_unique(ids: Sequence[str], what: str = "ids") -> None:
    """Raise ``ValueError`` naming the first id given twice in one add."""
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"{what} must be unique within one add() call: {i!r} is given twice")
        seen.add(i)


def check_ids_and_metadatas(
    n: int,
    ids: Sequence[str] | None,
    metadatas: Sequence[Metadata] | None,
    registry: Registry,
) -> tuple[list[str], list[Metadata]]:
    """Validate ``ids`` / ``metadatas`` for ``n`` new documents, filling in defaults.

    Args:
        n: number of documents being added.
        ids: string ids, or ``None`` for ``"0", "1", ...`` from the registry's next slot,
            skipping the ids it holds (a generated id never replaces a document).
        metadatas: dicts, or ``None`` for empty dicts.
        registry: the index's documents.

    Returns:
        ``(ids, metadatas)``, both of length ``n``; metadata deep-copied.
    """
    if ids is None:
        fresh = (str(i) for i in itertools.count(registry.next_slot))
        ids = list(itertools.islice((i for i in fresh if i not in registry), n))
    else:
        if isinstance(ids, str):
            raise TypeError("ids must be a list of strings, not a single string")
        ids = list(ids)
        if len(ids) != n:
            raise ValueError(f"got {n} vectors but {len(ids)} ids")
        for j, i in enumerate(ids):
            if not isinstance(i, str):
                raise TypeError(f"ids must be strings, got {type(i).__name__} ({i!r})")
            check_unicode(i, f"ids[{j}]")  # a lone surrogate could never be saved
        check_unique(ids)
    if metadatas is None:
        metadatas = [{} for _ in range(n)]
    else:
        metadatas = list(metadatas)
        if len(metadatas) != n:
            raise ValueError(f"got {n} vectors but {len(metadatas)} metadatas")
        for i, m in enumerate(metadatas):
            if not isinstance(m, dict):
                raise TypeError(f"each metadata must be a dict, got {type(m).__name__}")
            check_json_value(m, f"metadatas[{i}]")
        metadatas = copy.deepcopy(metadatas)
    return ids, metadatas


_JSON_SCALARS = (str, int, bool, type(None))


def check_json_value(value: object, where: str, depth: int = 0) -> None:
    """Raise ``TypeError`` unless ``value`` survives a save unchanged: dicts with string keys,
    lists, strings, finite numbers, booleans and ``None`` (checked when added, not at save).

    Args:
        value: the metadata (or part of it).
        where: its position, for the message (``metadatas[3]["tags"][0]``).
        depth: nesting depth so far (at most 100 levels).
    """
    if depth > 100:
        raise TypeError(f"{where}: metadata nested more than 100 levels deep cannot be saved")
    if isinstance(value, str):
        check_unicode(value, where)  # a lone surrogate has no UTF-8: the save would fail
        return
    if isinstance(value, _JSON_SCALARS):
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise TypeError(f"{where}: {value} cannot be saved in JSON metadata (finite numbers only)")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: metadata keys must be strings to be saved, got {key!r}")
            check_unicode(key, f"{where} key {key!r}")
            check_json_value(item, f"{where}[{key!r}]", depth + 1)
        return
    if isinstance(value, list):
        for j, item in enumerate(value):
            check_json_value(item, f"{where}[{j}]", depth + 1)
        return
    raise TypeError(
        f"{where}: a {type(value).__name__} cannot be saved in metadata (JSON values only: "
        "dict with str keys, list, str, int, float, bool, None)"
    )


class Registry:
    """The live documents of an index: id -> slot, slot -> (id, metadata)."""

    def __init__(self) -> None:
        self._slot_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        self._meta_of: dict[int, Metadata] = {}
        self.next_slot = 0

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._slot_of

    def new_slots(self, n: int) -> np.ndarray:
        """Reserve ``n`` fresh slots (``int64 [n]``)."""
        slots = np.arange(self.next_slot, self.next_slot + n, dtype=np.int64)
        self.next_slot += n
        return slots

    def put(self, doc_id: str, slot: int, metadata: Metadata) -> None:
        """Register a document (its previous slot must have been dropped)."""
        self._slot_of[doc_id] = slot
        self._id_of[slot] = doc_id
        self._meta_of[slot] = metadata

    def drop(self, ids: Iterable[str]) -> np.ndarray:
        """Forget the given ids (missing ones ignored); return their slots ``int64 [m]``."""
        slots = []
        for doc_id in ids:
            slot = self._slot_of.pop(doc_id, None)
            if slot is not None:
                del self._id_of[slot], self._meta_of[slot]
                slots.append(slot)
        return np.asarray(slots, dtype=np.int64)

    def slot(self, doc_id: str) -> int | None:
        return self._slot_of.get(doc_id)

    def is_live(self, slot: int) -> bool:
        return slot in self._id_of

    def doc_id(self, slot: int) -> str:
        return self._id_of[slot]

    def metadata(self, slot: int) -> Metadata:
        """A deep copy of the metadata of ``slot``."""
        return copy.deepcopy(self._meta_of[slot])

    def slots(self) -> np.ndarray:
        """All live slots in insertion order, ``int64 [n]``."""
        return np.fromiter(self._id_of.keys(), dtype=np.int64, count=len(self._id_of))

    def allowed_slots(self, flt: Filter | None) -> set[int] | None:
        """Slots whose metadata passes ``flt``; ``None`` when there is no filter."""
        keep = compile_filter(flt)
        if keep is None:
            return None
        return {s for s, m in self._meta_of.items() if keep(m)}

    # -- persistence ---------------------------------------------------------------------
    def to_json(self) -> dict:
        """A JSON-ready dict: ids, slots, metadatas (insertion order) and ``next_slot``."""
        slots = list(self._id_of.keys())
        ids = [self._id_of[s] for s in slots]
        metadatas = [self._meta_of[s] for s in slots]
        try:
            json.dumps(metadatas)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"metadata must be JSON-serializable to be saved: {exc}") from exc
        return {"ids": ids, "slots": slots, "metadatas": metadatas, "next_slot": self.next_slot}

    @classmethod
    def from_json(cls, data: dict) -> Registry:
        """Inverse of :meth:`to_json`."""
        reg = cls()
        ids, slots, metas = data["ids"], data["slots"], data["metadatas"]
        if not (len(ids) == len(slots) == len(metas)):
            raise ValueError("ids, slots and metadatas differ in length")
        for doc_id, slot, meta in zip(ids, slots, metas, strict=True):
            reg.put(str(doc_id), int(slot), dict(meta))
        reg.next_slot = int(data["next_slot"])
        return reg
