"""Arrays of an index folder: memory-mapped `.npy` files, checked against what meta.json says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def open_array(path: Path, dtype: type[np.generic], shape: tuple[int, ...]) -> Any:
    """Memory-map an array, insisting on the dtype and shape the index's metadata promises: a
    file of another shape is a corrupt index, not something to read past the end of."""
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if array.dtype != dtype or array.shape != shape:
        raise ValueError(f"{path.name} is {array.shape} {array.dtype}, expected {shape} {dtype}")
    return array


def plain(array: Any) -> Any:
    """A memory-mapped array as a plain ndarray view of the same mapping (no copy): indexing a
    np.memmap costs microseconds more per call."""
    return array.view(np.ndarray) if isinstance(array, np.memmap) else array
