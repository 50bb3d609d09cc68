"""Passages on disk: JSON Lines plus a byte-offset array, each line read when it is needed.

Parsing a million passages at open would take seconds; with the offsets, opening is
instant and a passage is read (one `pread`) and parsed only when a search returns it. A memory
map would be as fast, but kernels with large page-cache folios map up to 2 MB around every
touched line, so a running bot would soon count most of the file in its memory.
"""

from __future__ import annotations

import json
import os
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import overload

import numpy as np
import numpy.typing as npt

from embeddings.passages import Passage


def passages_file(passages: Sequence[Passage]) -> tuple[bytes, npt.NDArray[np.int64]]:
    """The JSONL bytes of `passages` and the offset of each line (plus the end)."""
    lines = [(json.dumps(p.to_json(), ensure_ascii=False) + "\n").encode() for p in passages]
    offsets = np.zeros(len(lines) + 1, dtype=np.int64)
    np.cumsum([len(line) for line in lines], out=offsets[1:])
    return b"".join(lines), offsets


class RowPassages(Sequence[Passage]):
    """Passages read by row number (`_read`): indexing, negative rows and slices done once."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _read(self, row: int) -> Passage: ...

    @overload
    def __getitem__(self, item: int) -> Passage: ...

    @overload
    def __getitem__(self, item: slice) -> list[Passage]: ...

    def __getitem__(self, item: int | slice) -> Passage | list[Passage]:
        if isinstance(item, slice):
            return [self._read(i) for i in range(*item.indices(len(self)))]
        if not -len(self) <= item < len(self):
            raise IndexError(item)
        return self._read(item % len(self))

    def __iter__(self) -> Iterator[Passage]:
        return (self._read(i) for i in range(len(self)))


class PassageStore(RowPassages):
    """The passages of one index generation, parsed on access."""

    def __init__(self, path: Path, offsets: npt.NDArray[np.int64]):
        self._file = path.open("rb", buffering=0)
        size = self._file.seek(0, 2)
        if len(offsets) == 0 or int(offsets[-1]) != size:
            self._file.close()
            raise ValueError(f"{path.name} is {size} bytes, its offsets say {offsets[-1:]}")
        self._offsets = offsets

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def _read(self, row: int) -> Passage:
        start, end = int(self._offsets[row]), int(self._offsets[row + 1])
        line = os.pread(self._file.fileno(), end - start, start)
        if len(line) != end - start:
            raise ValueError(f"passage {row} is cut short: the passages file shrank")
        return Passage.from_json(json.loads(line))
