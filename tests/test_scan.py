"""The int8 scan: quantize, save and load, shortlist, float rescoring, and each kernel."""

from __future__ import annotations

import importlib.util
import platform
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from embeddings.index import scan
from embeddings.index.scan import CODES, SCALES, FloatRows, Int8Matrix, top_rows


def _unit_rows(count: int, dimension: int = 48, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, dimension), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def _exact_top(vectors: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(vectors @ query), kind="stable")[:k]


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 64 rows, threads from 256 rows: small matrices take the big-matrix path."""
    monkeypatch.setattr(scan, "_BLOCK", 64)
    monkeypatch.setattr(scan, "_PARALLEL_ROWS", 256)


def test_save_and_load_round_trip_plain_npy(tmp_path: Path) -> None:
    """Codes and scales come back equal, from .npy files numpy reads without pickle."""
    matrix = Int8Matrix.quantize(_unit_rows(300))
    matrix.save(tmp_path)
    loaded = Int8Matrix.load(tmp_path)
    assert np.array_equal(loaded.codes, matrix.codes)
    assert np.array_equal(loaded.scales, matrix.scales)
    codes = np.load(tmp_path / CODES, allow_pickle=False)
    scales = np.load(tmp_path / SCALES, allow_pickle=False)
    assert (codes.dtype, scales.dtype) == (np.int8, np.float32)


def test_quantize_codes_times_scales_approximate_the_vectors() -> None:
    """Every value is within half a step of code * scale, and codes stay in [-127, 127]."""
    vectors = _unit_rows(500)
    matrix = Int8Matrix.quantize(vectors)
    error = np.abs(matrix.codes * matrix.scales - vectors)
    assert (error <= matrix.scales / 2 + 1e-7).all()
    assert matrix.codes.min() >= -127 and matrix.codes.max() <= 127


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.usefixtures("small_blocks")
def test_search_matches_an_exact_float_scan(threads: int) -> None:
    """The top 10 and their scores are those of `vectors @ query`, whatever the thread count."""
    vectors = _unit_rows(3000)
    matrix = Int8Matrix.quantize(vectors)
    for query in _unit_rows(20, seed=1):
        rows, scores = matrix.search(query, 10, vectors, threads=threads)
        assert list(rows) == list(_exact_top(vectors, query, 10))
        assert np.allclose(scores, (vectors @ query)[rows], atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2, 5])
@pytest.mark.usefixtures("small_blocks")
def test_shortlist_is_the_best_of_the_full_score_array(threads: int) -> None:
    """The blockwise shortlist equals ranking every int8 score, ties (copied rows) included."""
    vectors = np.repeat(_unit_rows(150), 4, axis=0)  # every score four times: ties everywhere
    matrix = Int8Matrix.quantize(vectors)
    for query in _unit_rows(5, seed=2):
        expected = top_rows(matrix.scores(query, threads=1), 40)
        assert list(matrix.shortlist(query, 40, threads=threads)) == list(expected)


@pytest.mark.usefixtures("small_blocks")
def test_rows_tied_with_the_last_kept_one_survive_every_cut() -> None:
    """Identical rows all tie: the shortlist is the lowest rows, however the blocks fell."""
    matrix = Int8Matrix.quantize(np.tile(_unit_rows(1), (2000, 1)))
    query = _unit_rows(1, seed=7)[0]
    assert list(matrix.shortlist(query, 25, threads=1)) == list(range(25))
    assert list(matrix.shortlist(query, 25, threads=3)) == list(range(25))


@pytest.mark.usefixtures("small_blocks")
def test_scores_do_not_depend_on_threads() -> None:
    """Each part writes its own rows: one thread and four give the same array."""
    matrix = Int8Matrix.quantize(_unit_rows(1000))
    query = _unit_rows(1, seed=3)[0]
    assert np.array_equal(matrix.scores(query, threads=1), matrix.scores(query, threads=4))


def test_scores_approximate_the_dot_products() -> None:
    """int8 scores are within 0.02 of the float dot products of unit vectors."""
    vectors = _unit_rows(2000, dimension=384)
    query = _unit_rows(1, dimension=384, seed=4)[0]
    scores = Int8Matrix.quantize(vectors).scores(query)
    assert np.abs(scores - vectors @ query).max() < 0.02


def _installed_kernels() -> list[str]:
    kernels = ["numpy"]
    if importlib.util.find_spec("numkong"):
        kernels.append("numkong")
    if importlib.util.find_spec("embeddings.index.int8dot"):
        kernels.append("int8dot")
    return kernels


@pytest.mark.parametrize("kernel", _installed_kernels())
@pytest.mark.parametrize("width", [384, 1, 31, 32, 33, 100, 2079, 2100])
def test_every_kernel_sums_exactly(
    monkeypatch: pytest.MonkeyPatch, kernel: str, width: int
) -> None:
    """Each kernel gives the exact integer dot products, for any width and row count, at the
    extremes of the code range too (where a 16-bit intermediate would saturate), and keeps
    exactly the rows that reach a floor."""
    monkeypatch.setattr(scan, "kernel", lambda: kernel)
    rng = np.random.default_rng(width)
    for rows in (0, 1, 3, 4, 5, 17, 600):  # 600: several of the compiled kernel's steps
        codes = rng.integers(-127, 128, (rows, width), dtype=np.int8)
        query = rng.integers(-127, 128, width, dtype=np.int8)
        out = np.full(rows, np.nan, dtype=np.float32)
        scan._dots(codes, query, out)
        exact = codes.astype(np.int64) @ query.astype(np.int64)
        assert np.array_equal(out, exact)
        floor = float(np.median(exact)) if rows else 0.0
        kept_rows, kept_scores = np.empty(rows, np.int64), np.empty(rows, np.float32)
        found = scan._above(codes, query, floor, kept_rows, kept_scores)
        assert list(kept_rows[:found]) == list(np.flatnonzero(exact >= floor))
        assert np.array_equal(kept_scores[:found], exact[exact >= floor])
    extremes = np.full((9, width), -127, dtype=np.int8)
    out = np.empty(9, dtype=np.float32)
    scan._dots(extremes, np.full(width, -127, dtype=np.int8), out)
    assert (out == width * 127 * 127).all()


@pytest.mark.parametrize("kernel", _installed_kernels())
def test_every_kernel_finds_the_exact_top(monkeypatch: pytest.MonkeyPatch, kernel: str) -> None:
    """Whichever kernel scans, the search returns the float scan's top 10."""
    monkeypatch.setattr(scan, "kernel", lambda: kernel)
    vectors = _unit_rows(5000, dimension=384)
    matrix = Int8Matrix.quantize(vectors)
    for query in _unit_rows(3, dimension=384, seed=5):
        assert list(matrix.search(query, 10, vectors)[0]) == list(_exact_top(vectors, query, 10))
    assert scan.has_fast_kernel() is (kernel != "numpy")


@pytest.mark.skipif(
    platform.machine() not in {"x86_64", "AMD64"} or not shutil.which("cc"),
    reason="the compiled kernel is built on x86-64 with a C compiler",
)
def test_the_compiled_kernel_is_installed_and_chosen() -> None:
    """The install built embeddings/index/int8dot.c, and the scan uses it on an AVX2 CPU."""
    from embeddings.index import int8dot

    assert scan.kernel() == ("int8dot" if int8dot.simd() else "numkong")


def test_float_rows_reads_exactly_the_rows_asked_for(tmp_path: Path) -> None:
    """Any rows, in any order, repeated or not, come back as the matrix's own rows."""
    vectors = _unit_rows(100)
    np.save(tmp_path / "vectors.npy", vectors, allow_pickle=False)
    rows = FloatRows(tmp_path / "vectors.npy")
    wanted = np.array([99, 0, 42, 42, 7], dtype=np.intp)
    try:
        assert len(rows) == 100 and rows.shape == (100, 48)
        assert np.array_equal(rows[wanted], vectors[wanted])
        assert rows[np.zeros(0, dtype=np.intp)].shape == (0, 48)
    finally:
        rows.close()


def test_search_reads_float_rows_from_disk(tmp_path: Path) -> None:
    """Rescoring through FloatRows gives what rescoring from the matrix in memory gives."""
    vectors = _unit_rows(800)
    np.save(tmp_path / "vectors.npy", vectors, allow_pickle=False)
    matrix = Int8Matrix.quantize(vectors)
    query = _unit_rows(1, seed=6)[0]
    rows = FloatRows(tmp_path / "vectors.npy")
    try:
        from_disk = matrix.search(query, 5, rows)
    finally:
        rows.close()
    in_memory = matrix.search(query, 5, vectors)
    assert np.array_equal(from_disk[0], in_memory[0])
    assert np.array_equal(from_disk[1], in_memory[1])


@pytest.mark.parametrize(
    ("count", "k", "expected"),
    [(30, 50, 30), (30, 0, 0), (30, -1, 0), (0, 10, 0), (1, 10, 1)],
    ids=["k>n", "k=0", "k<0", "empty", "one-row"],
)
def test_search_clamps_k_to_the_matrix(count: int, k: int, expected: int) -> None:
    """k is cut to the number of rows; nothing to return gives empty arrays, not an error."""
    vectors = _unit_rows(count)
    rows, scores = Int8Matrix.quantize(vectors).search(_unit_rows(1, seed=7)[0], k, vectors)
    assert len(rows) == len(scores) == expected
    assert list(rows) == list(_exact_top(vectors, _unit_rows(1, seed=7)[0], expected))


def test_empty_matrix_scores_and_shortlist() -> None:
    """A matrix with no rows scores to an empty array and shortlists nothing."""
    matrix = Int8Matrix.quantize(np.zeros((0, 48), dtype=np.float32))
    query = _unit_rows(1)[0]
    assert matrix.scores(query).shape == (0,)
    assert matrix.shortlist(query, 10).shape == (0,)


def test_zero_query_scores_zero() -> None:
    """A query of zeros (nothing to quantize) gives zero scores instead of dividing by zero."""
    matrix = Int8Matrix.quantize(_unit_rows(10))
    assert not matrix.scores(np.zeros(48, dtype=np.float32)).any()


def test_threads_below_one_raise() -> None:
    """threads=0 is a caller's mistake, reported as such."""
    matrix = Int8Matrix.quantize(_unit_rows(10))
    with pytest.raises(ValueError, match="threads"):
        matrix.shortlist(_unit_rows(1)[0], 5, threads=0)


def _float_codes(folder: Path) -> None:
    np.save(folder / CODES, np.zeros((4, 8), dtype=np.float32), allow_pickle=False)
    np.save(folder / SCALES, np.ones(8, dtype=np.float32), allow_pickle=False)


def _short_scales(folder: Path) -> None:
    np.save(folder / CODES, np.zeros((4, 8), dtype=np.int8), allow_pickle=False)
    np.save(folder / SCALES, np.ones(7, dtype=np.float32), allow_pickle=False)


def _flat_codes(folder: Path) -> None:
    np.save(folder / CODES, np.zeros(8, dtype=np.int8), allow_pickle=False)
    np.save(folder / SCALES, np.ones(8, dtype=np.float32), allow_pickle=False)


def _integer_scales(folder: Path) -> None:
    np.save(folder / CODES, np.zeros((4, 8), dtype=np.int8), allow_pickle=False)
    np.save(folder / SCALES, np.ones(8, dtype=np.int64), allow_pickle=False)


def _pickled_codes(folder: Path) -> None:
    np.save(folder / CODES, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(folder / SCALES, np.ones(8, dtype=np.float32), allow_pickle=False)


def _truncated_codes(folder: Path) -> None:
    np.save(folder / CODES, np.zeros((4, 8), dtype=np.int8), allow_pickle=False)
    np.save(folder / SCALES, np.ones(8, dtype=np.float32), allow_pickle=False)
    data = (folder / CODES).read_bytes()
    (folder / CODES).write_bytes(data[:-5])


@pytest.mark.parametrize(
    "damage",
    [_float_codes, _short_scales, _flat_codes, _integer_scales, _pickled_codes, _truncated_codes],
)
def test_damaged_files_raise_value_error(tmp_path: Path, damage: Callable[[Path], None]) -> None:
    """Codes or scales of the wrong dtype or shape, pickles and truncated files are refused."""
    damage(tmp_path)
    with pytest.raises(ValueError):  # noqa: PT011 -- numpy's own messages vary by damage
        Int8Matrix.load(tmp_path)


def test_float_rows_refuses_a_non_float32_matrix(tmp_path: Path) -> None:
    """A float64 or one-dimensional file is not a float32 matrix and says so."""
    np.save(tmp_path / "vectors.npy", np.zeros((3, 4)), allow_pickle=False)
    with pytest.raises(ValueError, match="not a float32 matrix"):
        FloatRows(tmp_path / "vectors.npy")
