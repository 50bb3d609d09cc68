"""A faster scan for big indexes: int8 codes read by a SIMD kernel, the best rows rescored in float.

A float32 matrix costs 1,536 bytes per passage and `matrix @ query` reads all of them for every
question. Here each row is also kept as 384 int8 codes (a quarter of the bytes) with one scale per
dimension; the scan reads only the codes, keeps the `candidates` best rows, and rescores those from
the float matrix (memory-mapped: only the few rows asked for are touched), so the final order and
scores are the float ones. On this project's vectors the int8 shortlist of 100 holds the exact
top 10 (benchmarks/speed.py measures it).

The kernel is the project's own (`embeddings/index/int8dot.c`, AVX2 `vpmaddubsw`, built at install
when a C compiler is present): it multiplies bytes directly and prefetches ahead, so one core
scans about as fast as it can read memory. Without it, NumKong's int8 dot product does the same
arithmetic at about 1.4x the time (on AVX2 it widens every byte to 16 bits first), and without
either, numpy does, correct but slower than the float32 scan. Big matrices are cut into one
contiguous part per core, scanned by threads (the kernels release the GIL), and each part keeps
only its best rows as it goes: the full score array is never built.

Files (plain ``.npy``, ``allow_pickle=False``)::

    codes.npy    int8 (count, dimension): round(vector / scales), in [-127, 127]
    scales.npy   float32 (dimension,): the largest |value| of each dimension / 127
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from embeddings.cores import cores
from embeddings.encoders.base import Vectors

CODES, SCALES = "codes.npy", "scales.npy"
# Rows the int8 scan hands to the float rescoring (at least; 3 x k when k is larger).
CANDIDATES = 100
# For larger k, the shortlist is this many times k: on the speed benchmark's vectors a shortlist
# of 3 x 100 holds the exact top 100, and every shortlisted row costs a float read.
SHORTLIST_FACTOR = 3
# Rows per kernel call: 6 MB of codes streamed between two visits to Python.
_BLOCK = 16384
# The scan's first block is this many times the shortlist's length, and each block after it
# this many times the last (up to `_BLOCK`): the floor a row must reach rises early, so few rows
# are copied out and sorted.
_GROWTH = 4
# A shortlist holds up to this many times its length before it is cut back: each cut partitions
# everything held, so cutting rarely costs less.
_SLACK = 4
# Rows quantised per step: bounded temporary float memory (25 MB) however many rows there are.
_QUANTIZE_ROWS = 65536
# Rows per numpy step when no SIMD kernel is installed: 1.5 MB of float32, inside a core's cache.
_NUMPY_BLOCK = 1024
# Smaller matrices scan in this thread: one core reads their codes about as fast as two (the
# kernel keeps up with memory), and waking the pool and merging its parts would cost more.
_PARALLEL_ROWS = 262144

Codes = npt.NDArray[np.int8]
Rows = npt.NDArray[np.intp]
T = TypeVar("T")


@dataclass(frozen=True)
class Int8Matrix:
    """int8 codes of a matrix's rows with per-dimension scales: code * scale ~ value."""

    codes: Codes
    scales: Vectors

    def __len__(self) -> int:
        return len(self.codes)

    @classmethod
    def quantize(cls, vectors: Vectors) -> Int8Matrix:
        """Symmetric per-dimension int8 codes for `vectors` (rows of any length)."""
        peak = np.abs(vectors).max(axis=0) if len(vectors) else np.ones(vectors.shape[1])
        scales = (np.maximum(peak, 1e-12) / 127).astype(np.float32)
        codes = np.empty(vectors.shape, dtype=np.int8)
        for start in range(0, len(vectors), _QUANTIZE_ROWS):
            block = vectors[start : start + _QUANTIZE_ROWS] / scales
            codes[start : start + _QUANTIZE_ROWS] = np.clip(np.rint(block), -127, 127)
        return cls(codes, scales)

    def save(self, folder: Path) -> None:
        """Write codes.npy and scales.npy into `folder`."""
        np.save(folder / CODES, self.codes, allow_pickle=False)
        np.save(folder / SCALES, self.scales, allow_pickle=False)

    @classmethod
    def load(cls, folder: Path) -> Int8Matrix:
        """Open the codes of `folder` memory-mapped (nothing is read until a scan)."""
        codes = np.load(folder / CODES, mmap_mode="r", allow_pickle=False)
        scales = np.load(folder / SCALES, allow_pickle=False)
        if codes.dtype != np.int8 or codes.ndim != 2 or scales.shape != (codes.shape[1],):
            raise ValueError(
                f"codes {codes.shape} {codes.dtype} do not match scales {scales.shape}"
            )
        if not np.issubdtype(scales.dtype, np.floating):
            raise ValueError(f"scales are {scales.dtype}, not floating point")
        return cls(codes, scales.astype(np.float32))

    def scores(self, query: Vectors, threads: int | None = None) -> Vectors:
        """Approximate dot products of every row with `query` (error ~1e-3 for unit vectors)."""
        query_codes, step = self._quantize_query(query)
        out = np.empty(len(self), dtype=np.float32)
        parts = row_ranges(len(self), threads)
        _run(parts, lambda lo, hi: _dots(self.codes[lo:hi], query_codes, out[lo:hi]))
        out *= np.float32(step)
        return out

    def shortlist(self, query: Vectors, count: int, threads: int | None = None) -> Rows:
        """The `count` rows with the highest int8 scores, best first (ties: lower row first).

        The same rows as ranking `scores(query)`, without building that array: each part keeps
        its best rows while it scans.
        """
        count = min(count, len(self))
        if count <= 0:
            return np.zeros(0, dtype=np.intp)
        query_codes, _ = self._quantize_query(query)
        parts = row_ranges(len(self), threads)
        found = _run(parts, lambda lo, hi: _scan_part(self.codes, query_codes, lo, hi, count))
        if len(found) == 1:
            return found[0][0]
        rows = np.concatenate([r for r, _ in found])
        rows, _ = _top(np.concatenate([s for _, s in found]), rows, count)
        return rows

    def search(
        self, query: Vectors, k: int, vectors: Vectors | FloatRows, threads: int | None = None
    ) -> tuple[Rows, Vectors]:
        """The `k` best rows by their float score in `vectors`, best first, and those scores.

        The int8 scan shortlists `max(CANDIDATES, 3 * k)` rows; only those rows of `vectors`
        (the float matrix in memory, or `FloatRows` reading it from disk) are read. `threads`
        defaults to every core this process may run on.
        """
        k = min(k, len(self))
        if k <= 0:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32)
        shortlist = self.shortlist(query, max(CANDIDATES, SHORTLIST_FACTOR * k), threads)
        shortlist.sort()  # ascending rows read the file in order
        exact = np.asarray(vectors[shortlist], dtype=np.float32) @ query
        best = top_rows(exact, k)
        return shortlist[best], exact[best]

    def _quantize_query(self, query: Vectors) -> tuple[Codes, float]:
        """int8 codes of `query * scales` and their step: code . query_code * step ~ score."""
        folded = query * self.scales  # code . folded == (code * scales) . query
        peak = float(np.abs(folded).max()) if folded.size else 0.0
        step = peak / 127 if peak > 0 else 1.0
        return np.rint(folded / step).astype(np.int8), step


class FloatRows:
    """Rows of a float32 ``.npy`` matrix read with ``pread``, for rescoring a shortlist.

    Reading 100 scattered rows through a memory map maps far more than 100 rows: kernels with
    large page-cache folios (Linux 6.x) map up to 2 MB around each fault, so a few dozen
    questions make the whole matrix count in the process's RSS. `pread` copies just the rows.
    """

    def __init__(self, path: Path) -> None:
        header: Any = np.load(path, mmap_mode="r", allow_pickle=False)  # reads the header only
        if header.dtype != np.float32 or header.ndim != 2:
            raise ValueError(f"{path.name} is {header.shape} {header.dtype}, not a float32 matrix")
        self.shape: tuple[int, int] = (int(header.shape[0]), int(header.shape[1]))
        self._start = int(header.offset)
        self._file = path.open("rb", buffering=0)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: Rows) -> Vectors:
        width = self.shape[1] * np.dtype(np.float32).itemsize  # bytes per row
        out = np.empty((len(rows), self.shape[1]), dtype=np.float32)
        descriptor = self._file.fileno()
        for position, row in enumerate(rows):
            data = os.pread(descriptor, width, self._start + int(row) * width)
            out[position] = np.frombuffer(data, dtype=np.float32)
        return out

    def close(self) -> None:
        self._file.close()


def top_rows(scores: npt.NDArray[Any], count: int) -> Rows:
    """Positions of the `count` highest scores, best first; ties keep position order. The one
    top-k of the project: the index, the scan and the ranking all choose with it."""
    rows, _ = _top(scores, np.arange(len(scores)), count)
    return rows


def _top(scores: npt.NDArray[Any], rows: Rows, count: int) -> tuple[Rows, npt.NDArray[Any]]:
    """The `count` best (row, score) pairs, best first; ties go to the lower row."""
    count = min(count, len(scores))
    if count <= 0:
        return rows[:0], scores[:0]
    # Every score tied with the count-th best competes, so ties at the edge go to lower rows.
    edge = np.partition(scores, len(scores) - count)[len(scores) - count]
    candidates = np.flatnonzero(scores >= edge)
    order = np.lexsort((rows[candidates], -scores[candidates]))[:count]
    chosen = candidates[order]
    return rows[chosen], scores[chosen]


class _Shortlist:
    """The best `count` rows offered so far, and the score a new row must reach to matter."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.rows: list[Rows] = [np.zeros(0, dtype=np.intp)]
        self.scores: list[Vectors] = [np.zeros(0, dtype=np.float32)]
        self.held = 0
        self.floor = -np.inf

    def offer(self, rows: Rows, scores: Vectors) -> None:
        """Keep these rows (all at or above `floor`) and their scores."""
        self.rows.append(rows)
        self.scores.append(scores)
        self.held += len(rows)
        if self.held >= _SLACK * self.count:
            self._cut()

    def best(self) -> tuple[Rows, Vectors]:
        return _top(np.concatenate(self.scores), np.concatenate(self.rows), self.count)

    def _cut(self) -> None:
        """Keep the held rows scoring at least the `count`-th best, ties included, unsorted
        (only `best` sorts, and breaks ties by row)."""
        scores, rows = np.concatenate(self.scores), np.concatenate(self.rows)
        self.floor = float(np.partition(scores, len(scores) - self.count)[-self.count])
        kept = scores >= self.floor
        self.rows, self.scores, self.held = [rows[kept]], [scores[kept]], int(kept.sum())


def _scan_part(
    codes: Codes, query_codes: Codes, lo: int, hi: int, count: int
) -> tuple[Rows, Vectors]:
    """The best `count` rows of `codes[lo:hi]` by int8 dot product, a block at a time.

    The first blocks are small and grow `_GROWTH`-fold, so the floor a row must reach rises early
    and few rows are copied out and sorted.
    """
    shortlist = _Shortlist(count)
    block = _GROWTH * count
    rows = np.empty(max(_BLOCK, block), dtype=np.int64)
    scores = np.empty(max(_BLOCK, block), dtype=np.float32)
    start = lo
    while start < hi:
        stop = min(start + block, hi)
        found = _above(codes[start:stop], query_codes, shortlist.floor, rows, scores)
        shortlist.offer(rows[:found] + start, scores[:found].copy())
        start, block = stop, max(block, min(_GROWTH * block, _BLOCK))
    return shortlist.best()


def row_ranges(rows: int, threads: int | None) -> list[tuple[int, int]]:
    """Contiguous (start, stop) row ranges of about equal size, one per thread."""
    wanted = cores() if threads is None else threads
    if wanted < 1:
        raise ValueError(f"threads must be at least 1, not {wanted}")
    count = 1 if rows < _PARALLEL_ROWS else wanted
    edges = [rows * part // count for part in range(count + 1)]
    return list(itertools.pairwise(edges))


def _run(parts: list[tuple[int, int]], work: Callable[[int, int], T]) -> list[T]:
    """`work(start, stop)` for every part: in this thread when there is one, else in the pool."""
    if len(parts) == 1:
        return [work(*parts[0])]
    return list(_pool(len(parts)).map(lambda part: work(*part), parts))


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    """One long-lived pool per thread count: starting threads per question would cost more."""
    return ThreadPoolExecutor(threads, thread_name_prefix="int8-scan")


def _dots(codes: Codes, query_codes: Codes, out: Vectors) -> None:
    """`codes @ query_codes` into `out`, by the fastest kernel installed.

    float32 holds these sums exactly: 384 * 127 * 127 is below 2**24.
    """
    if len(codes) == 0:
        return
    chosen = kernel()
    if chosen == "int8dot":
        from embeddings.index import int8dot

        int8dot.dots(np.ascontiguousarray(codes), query_codes, out)
    elif chosen == "numkong":
        import numkong

        numkong.cdist(query_codes[None, :], codes, "dot", out=out[None, :], out_dtype="float32")
    else:
        query = query_codes.astype(np.float32)
        for start in range(0, len(codes), _NUMPY_BLOCK):
            block = codes[start : start + _NUMPY_BLOCK].astype(np.float32)
            np.matmul(block, query, out=out[start : start + _NUMPY_BLOCK])


def _above(
    codes: Codes, query_codes: Codes, floor: float, rows: npt.NDArray[np.int64], scores: Vectors
) -> int:
    """The rows of `codes` whose dot product reaches `floor`, and those products, into the
    first places of `rows` and `scores` (each at least as long as `codes`); returns how many."""
    if len(codes) == 0:
        return 0
    if kernel() == "int8dot":
        from embeddings.index import int8dot

        return int8dot.above(np.ascontiguousarray(codes), query_codes, floor, rows, scores)
    every = scores[: len(codes)]
    _dots(codes, query_codes, every)
    kept = np.flatnonzero(every >= floor)
    rows[: len(kept)] = kept
    scores[: len(kept)] = every[kept]
    return len(kept)


@functools.cache
def kernel() -> str:
    """The int8 kernel this install has: "int8dot" (compiled here), "numkong" or "numpy"."""
    try:
        from embeddings.index import int8dot

        if int8dot.simd():
            return "int8dot"
    except ImportError:
        pass
    try:
        import numkong  # noqa: F401
    except ImportError:
        return "numpy"
    return "numkong"


def has_fast_kernel() -> bool:
    """True when a SIMD int8 kernel (the compiled one or NumKong) is available."""
    return kernel() != "numpy"
