"""A faster scan for big indexes: int8 codes read by a SIMD kernel, the best rows rescored in float.

A float32 matrix costs 1,536 bytes per passage and `matrix @ query` reads all of them for every
question. Here each row is also kept as 384 int8 codes (a quarter of the bytes) with one scale per
dimension; the scan reads only the codes, keeps the `candidates` best rows, and rescores those from
the float matrix (memory-mapped: only the few rows asked for are touched), so the final order and
scores are the float ones. On this project's vectors the int8 shortlist of 100 holds the exact
top 10 (benchmarks/speed.py measures it).

The kernel is NumKong's int8 dot product (`numkong.cdist`, AVX2/AVX-512/NEON); without NumKong the
same arithmetic runs in numpy over row chunks, correct but slower than the float32 scan.

Files (plain ``.npy``, ``allow_pickle=False``)::

    codes.npy    int8 (count, dimension): round(vector / scales), in [-127, 127]
    scales.npy   float32 (dimension,): the largest |value| of each dimension / 127
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings.encoder import Vectors

CODES, SCALES = "codes.npy", "scales.npy"
# Rows the int8 scan hands to the float rescoring (at least; 10 x k when k is larger).
CANDIDATES = 100
# Rows per numpy step when NumKong is missing: 1.5 MB of float32, inside a core's cache.
_CHUNK = 4096

Codes = npt.NDArray[np.int8]
Rows = npt.NDArray[np.intp]


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
        for start in range(0, len(vectors), 65536):  # bounded temporary memory at 1M rows
            block = vectors[start : start + 65536] / scales
            codes[start : start + 65536] = np.clip(np.rint(block), -127, 127)
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
        if codes.dtype != np.int8 or scales.shape != (codes.shape[1],):
            raise ValueError(
                f"codes {codes.shape} {codes.dtype} do not match scales {scales.shape}"
            )
        return cls(codes, scales.astype(np.float32))

    def scores(self, query: Vectors) -> Vectors:
        """Approximate dot products of every row with `query` (error ~1e-3 for unit vectors)."""
        folded = query * self.scales  # code . folded == (code * scales) . query
        peak = float(np.abs(folded).max())
        step = peak / 127 if peak > 0 else 1.0
        query_codes = np.rint(folded / step).astype(np.int8)
        return _int8_dots(self.codes, query_codes) * np.float32(step)

    def search(self, query: Vectors, k: int, vectors: Vectors | FloatRows) -> tuple[Rows, Vectors]:
        """The `k` best rows by their float score in `vectors`, best first, and those scores.

        The int8 scan shortlists `max(CANDIDATES, 10 * k)` rows; only those rows of `vectors`
        (the float matrix in memory, or `FloatRows` reading it from disk) are read.
        """
        k = min(k, len(self))
        if k <= 0:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32)
        shortlist = _best(self.scores(query), max(CANDIDATES, 10 * k))
        shortlist.sort()  # ascending rows read the file in order
        exact = np.asarray(vectors[shortlist], dtype=np.float32) @ query
        best = _best(exact, k)
        return shortlist[best], exact[best]


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
        width = self.shape[1] * 4
        out = np.empty((len(rows), self.shape[1]), dtype=np.float32)
        descriptor = self._file.fileno()
        for position, row in enumerate(rows):
            data = os.pread(descriptor, width, self._start + int(row) * width)
            out[position] = np.frombuffer(data, dtype=np.float32)
        return out

    def close(self) -> None:
        self._file.close()


def _best(scores: Vectors, count: int) -> Rows:
    """Positions of the `count` highest scores, best first; ties keep position order."""
    count = min(count, len(scores))
    candidates = np.argpartition(-scores, count - 1)[:count]
    order = np.lexsort((candidates, -scores[candidates]))
    rows: Rows = candidates[order]
    return rows


def _int8_dots(codes: Codes, query_codes: Codes) -> Vectors:
    """`codes @ query_codes` as float32, by NumKong's SIMD kernel when it is installed."""
    kernel = _numkong()
    if kernel is not None:
        result = kernel.cdist(query_codes[None, :], codes, "dot", out_dtype="float32")
        return np.asarray(result, dtype=np.float32).reshape(len(codes))
    query = query_codes.astype(np.float32)
    out = np.empty(len(codes), dtype=np.float32)
    for start in range(0, len(codes), _CHUNK):
        np.matmul(codes[start : start + _CHUNK].astype(np.float32), query, out=out[start:][:_CHUNK])
    return out


def _numkong() -> Any:
    """The numkong module, or None when it is not installed."""
    try:
        import numkong
    except ImportError:
        return None
    return numkong


def has_fast_kernel() -> bool:
    """True when the SIMD int8 kernel (NumKong) is available."""
    return _numkong() is not None
