"""Arrow columns in and out of the Ray integration.

Vectors travel as Arrow fixed-size lists, never as Python lists: an ``embedding`` column is
``fixed_size_list<float32>[D]`` (one row per text), a ``token_embed`` column is
``list<fixed_size_list<float32>[D]>`` (a variable number of token vectors per text). Columns
Ray Data made from numpy arrays (its tensor extension type) are read as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa


def vectors_column(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """A ``fixed_size_list<float32>[D]`` column from a ``[N, D]`` matrix (no copy of the values)."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"expected a [N, D] matrix, got shape {list(matrix.shape)}")
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def token_vectors_column(docs: Sequence[np.ndarray], dim: int) -> pa.ListArray:
    """A ``list<fixed_size_list<float32>[D]>`` column from one ``[L_i, D]`` matrix per row."""
    lengths = np.asarray([len(d) for d in docs], dtype=np.int64)
    offsets = np.zeros(len(docs) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(docs).astype(np.float32, copy=False) if docs else np.zeros((0, dim), np.float32)
    return pa.ListArray.from_arrays(pa.array(offsets), vectors_column(flat.reshape(-1, dim)))


def _one_chunk(column: Any) -> Any:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


def column_matrix(column: Any, name: str) -> np.ndarray:
    """``float32 [N, D]`` from a fixed-size-list column, a Ray tensor column or a numpy array.

    Raises:
        ValueError: a null row, rows of different sizes, or a column that holds no vectors.
    """
    if isinstance(column, np.ndarray):
        if column.dtype == object:  # numpy batch of a fixed-size-list column: one array per row
            column = np.stack([np.asarray(v, dtype=np.float32) for v in column]) if len(column) else column
        arr = np.asarray(column, dtype=np.float32)
    else:
        column = _one_chunk(column)
        if column.null_count:
            raise ValueError(f"column {name!r} has {column.null_count} null rows")
        if isinstance(column.type, pa.FixedSizeListType):
            values = column.flatten().to_numpy(zero_copy_only=False)
            arr = values.astype(np.float32, copy=False).reshape(len(column), column.type.list_size)
        elif isinstance(column.type, pa.ExtensionType) and hasattr(column, "to_numpy"):
            arr = np.asarray(column.to_numpy(), dtype=np.float32)  # Ray's tensor extension type
        else:
            raise ValueError(f"column {name!r} holds {column.type}, expected fixed_size_list<float>[D]")
    if arr.ndim != 2:
        raise ValueError(f"column {name!r} has shape {list(arr.shape)}, expected one vector per row")
    return arr


def column_token_vectors(column: Any, name: str) -> list[np.ndarray]:
    """One ``float32 [L_i, D]`` matrix per row from a ``list<fixed_size_list>`` column (or the
    object arrays of a numpy batch)."""
    if isinstance(column, np.ndarray):
        return [np.asarray(np.stack(list(v)) if v.dtype == object else v, dtype=np.float32) for v in column]
    column = _one_chunk(column)
    if column.null_count:
        raise ValueError(f"column {name!r} has {column.null_count} null rows")
    if not isinstance(column.type, (pa.ListType, pa.LargeListType)) or not isinstance(
        column.type.value_type, pa.FixedSizeListType
    ):
        raise ValueError(f"column {name!r} holds {column.type}, expected list<fixed_size_list<float>[D]>")
    offsets = column.offsets.to_numpy()
    flat = column_matrix(column.values, name)
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(column))]


def column_strings(column: Any, name: str) -> list[str]:
    """The column as Python strings.

    Raises:
        TypeError: a row that is not a string, naming the column and the row.
    """
    values = column.to_pylist() if hasattr(column, "to_pylist") else list(column)
    for row, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(f"column {name!r}, row {row}: expected a string, got {type(value).__name__}")
    return values


def column_of(batch: Any, name: str) -> Any:
    """``batch[name]`` for an Arrow table, a pandas DataFrame or a dict of numpy arrays.

    Raises:
        KeyError: the batch has no such column (the message lists those it has).
    """
    names = batch.column_names if isinstance(batch, pa.Table) else list(batch.keys())
    if name not in names:
        raise KeyError(f"the batch has no column {name!r} (it has {sorted(names)})")
    column = batch[name]
    return column.to_numpy() if hasattr(column, "iloc") else column  # a pandas Series
