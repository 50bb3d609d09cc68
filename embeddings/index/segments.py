"""Several segments read as one: global row = the segment's first row + its local row.

An index generation may hold a base segment and a few small append segments (layout.py).
These views let the rest of the code read their rows, matrices and passages as if they were one
array, without copying any segment: a lookup finds each row's segment with `np.searchsorted`
over the segments' first rows and reads it there.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from embeddings.index.store import RowPassages
from embeddings.passages import Passage

Rows = npt.NDArray[np.intp]


class RowSource(Protocol):
    """Anything whose rows can be read by an array of row numbers (a matrix, `FloatRows`)."""

    def __len__(self) -> int: ...

    def __getitem__(self, rows: Rows, /) -> Any: ...


def starts_of(lengths: Sequence[int]) -> npt.NDArray[np.int64]:
    """The first global row of each part, and the total at the end."""
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    return starts


def gather(
    parts: Sequence[RowSource],
    starts: npt.NDArray[np.int64],
    items: Any,
    add: Sequence[int] | None = None,
) -> Any:
    """`parts` read as one array at `items` (global numbers), in the order of `items`; with
    `add`, each value read from part p is increased by `add[p]`.

    Each part is read once, at its items in ascending order (a file is read front to back).
    """
    items = np.asarray(items, dtype=np.intp)
    order = np.argsort(items, kind="stable")
    ordered = items[order]
    if len(items) and not 0 <= ordered[0] <= ordered[-1] < starts[-1]:
        raise IndexError(f"rows {ordered[0]}..{ordered[-1]} outside 0..{starts[-1] - 1}")
    bounds = np.searchsorted(ordered, starts)
    values = [
        np.asarray(parts[p][ordered[lo:hi] - starts[p]]) + (add[p] if add else 0)
        for p, (lo, hi) in enumerate(itertools.pairwise(bounds.tolist()))
        if hi > lo
    ]
    if not values:
        return np.asarray(parts[0][ordered[:0]])
    found = np.concatenate(values) if len(values) > 1 else values[0]
    out = np.empty_like(found)
    out[order] = found
    return out


class StackedRows:
    """The rows of several matrices as one matrix (read-only; index by rows, slice or int)."""

    def __init__(self, parts: Sequence[RowSource], width: int, dtype: Any = np.float32) -> None:
        self.parts = list(parts)
        self.starts = starts_of([len(part) for part in self.parts])
        self.shape = (int(self.starts[-1]), width)
        self.dtype = np.dtype(dtype)
        self.nbytes = self.shape[0] * width * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: Any) -> Any:
        if isinstance(rows, slice):
            return gather(self.parts, self.starts, np.arange(len(self))[rows])
        if isinstance(rows, int | np.integer):
            return gather(self.parts, self.starts, [int(rows) % len(self)])[0]
        return gather(self.parts, self.starts, rows)

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        whole = np.concatenate([np.asarray(part[np.arange(len(part))]) for part in self.parts])
        return whole if dtype is None else whole.astype(dtype)


class Dots:
    """The dot products of a matrix's rows with `query`, read by row numbers like the matrix
    itself (so `gather` over several matrices reads scores, not whole rows)."""

    def __init__(self, matrix: RowSource, query: Any) -> None:
        self.matrix = matrix
        self.query = query

    def __len__(self) -> int:
        return len(self.matrix)

    def __getitem__(self, rows: Rows) -> Any:
        return np.asarray(self.matrix[rows]) @ self.query


class ChainedPassages(RowPassages):
    """The passages of several segments, in global row order."""

    def __init__(self, parts: Sequence[Sequence[Passage]]) -> None:
        self.parts = list(parts)
        self.starts = starts_of([len(part) for part in self.parts])
        self._firsts: list[int] = self.starts[:-1].tolist()

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _read(self, row: int) -> Passage:
        part = bisect.bisect_right(self._firsts, row) - 1
        return self.parts[part][row - self._firsts[part]]

    def __iter__(self) -> Iterator[Passage]:
        return (passage for part in self.parts for passage in part)
