"""Several segments read as one: global row = the segment's first row + its local row.

An index generation may hold a base segment and a few small append segments (embeddings/index.py).
These views let the rest of the code read their rows, matrices and passages as if they were one
array, without copying any segment: a lookup finds each row's segment with `np.searchsorted`
over the segments' first rows and reads it there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, overload

import numpy as np
import numpy.typing as npt

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


def locate(starts: npt.NDArray[np.int64], items: Rows) -> tuple[Rows, Rows]:
    """The part each global item falls in, and its number within that part."""
    part = np.searchsorted(starts, items, side="right") - 1
    return part, items - starts[part]


def gather(parts: Sequence[RowSource], starts: npt.NDArray[np.int64], items: Any) -> Any:
    """`parts` read as one array at `items` (global numbers), in the order of `items`."""
    items = np.asarray(items, dtype=np.intp)
    part, local = locate(starts, items)
    found = {int(p): np.asarray(parts[p][local[part == p]]) for p in np.unique(part)}
    sample = next(iter(found.values()), None)
    if sample is None:
        sample = np.asarray(parts[0][np.zeros(0, dtype=np.intp)])
    out = np.empty((len(items), *sample.shape[1:]), dtype=sample.dtype)
    for p, values in found.items():
        out[part == p] = values
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


class ChainedPassages(Sequence[Passage]):
    """The passages of several segments, in global row order."""

    def __init__(self, parts: Sequence[Sequence[Passage]]) -> None:
        self.parts = list(parts)
        self.starts = starts_of([len(part) for part in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    @overload
    def __getitem__(self, item: int) -> Passage: ...

    @overload
    def __getitem__(self, item: slice) -> list[Passage]: ...

    def __getitem__(self, item: int | slice) -> Passage | list[Passage]:
        if isinstance(item, slice):
            return [self[i] for i in range(*item.indices(len(self)))]
        if not -len(self) <= item < len(self):
            raise IndexError(item)
        part, local = locate(self.starts, np.array([item % len(self)], dtype=np.intp))
        return self.parts[int(part[0])][int(local[0])]

    def __iter__(self) -> Iterator[Passage]:
        return (passage for part in self.parts for passage in part)
