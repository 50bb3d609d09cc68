"""Opening an index generation, and finding the passages nearest a question.

The files and their names are in `embeddings.index.layout`. Opening maps the arrays and parses
nothing large, so a million-passage index opens in well under a second; the checksums are
verified at open up to `VERIFY_BYTES` of files (and by `Index.verify` at any size).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings.encoders.base import Vectors
from embeddings.errors import IndexCorruptError, IndexNotFoundError, ModelMismatchError
from embeddings.index import layout
from embeddings.index.arrays import open_array, plain
from embeddings.index.catalog import ArticleEntry, Catalog
from embeddings.index.lexical import LexicalIndex, SegmentedLexical, Tokenizer
from embeddings.index.scan import CODES, FloatRows, Int8Matrix, has_fast_kernel, top_rows
from embeddings.index.segments import ChainedPassages, Dots, StackedRows, gather, starts_of
from embeddings.index.store import PassageStore
from embeddings.passages import Passage

# Up to this many bytes of files, opening an index verifies every checksum (about 0.2 s);
# a larger index is verified by `Index.verify` (`newsqa check`), not on every start.
VERIFY_BYTES = 256 * 2**20
# A float matrix up to this size has its rescored rows gathered from the memory map; a larger
# one has them read with pread (see `Index.__init__`): mapped whole, it would exceed the memory
# a running bot may use.
GATHER_BYTES = 256 * 2**20
# From this many passages on, the nearest rows are found by the int8 scan and rescored.
INT8_SCAN_ROWS = 50_000

Rows = npt.NDArray[np.intp]
Scores = npt.NDArray[np.float32]

log = logging.getLogger(__name__)


class Segment:
    """One self-contained part of a generation: memory-mapped matrices, the passages and
    articles their rows belong to, and the BM25 index of the same passages."""

    def __init__(
        self,
        vectors: Vectors,
        passages: Sequence[Passage],
        meta: dict[str, Any],
        *,
        catalog: Catalog,
        lexical: LexicalIndex,
        multilingual: Vectors | None = None,
        codes: Int8Matrix | None = None,
        folder: Path | None = None,
    ):
        self.folder = folder  # where its files are; None for a segment held in memory
        self.vectors = vectors
        self.passages = passages
        self.meta = meta
        self.catalog = catalog
        self.lexical = lexical
        self.multilingual = multilingual
        self.codes = codes
        # Rows for rescoring. A big matrix's are copied with pread: gathering them through the
        # memory map would map up to 2 MB around each (large page-cache folios), and a running
        # bot would soon count most of the matrix in its memory. A small matrix may be all
        # mapped, and gathering is faster (about 1 ms per question at 100,000 passages).
        big = codes is not None and vectors.nbytes > GATHER_BYTES
        self.rows: Vectors | FloatRows = (
            FloatRows(folder / layout.VECTORS) if folder is not None and big else vectors
        )

    def __len__(self) -> int:
        return len(self.passages)

    def nearest(self, query: Vectors, k: int, *, multilingual: bool) -> tuple[Rows, Vectors]:
        """Local rows of the `k` passages closest to `query`, best first, and their cosines:
        by the int8 scan when the segment keeps codes, else exactly."""
        if self.scans_int8(multilingual):
            assert self.codes is not None
            return self.codes.search(query, k, self.rows)
        scores = self.cosines_all(query, multilingual)
        rows = top_rows(scores, k)
        return rows, scores[rows]

    def scans_int8(self, multilingual: bool) -> bool:
        """Whether `nearest` goes through the int8 codes."""
        return self.codes is not None and not multilingual and has_fast_kernel()

    def cosines_all(self, query: Vectors, multilingual: bool) -> Vectors:
        """The cosine of `query` with every row, exactly."""
        matrix = self.multilingual if multilingual else self.vectors
        if matrix is None:
            raise ModelMismatchError("This index has no multilingual vectors")
        return np.asarray(matrix @ query)


class Index:
    """A loaded index generation: its segments read as one, in global row order (a single
    segment is read directly)."""

    def __init__(
        self,
        generation: str,
        segments: Sequence[Segment],
        meta: dict[str, Any],
        *,
        folder: Path | None = None,
    ):
        self.generation = generation
        self.folder = folder  # the generation folder; None for an index held in memory
        self.segments = list(segments)
        self.meta = meta
        self._row_starts = starts_of([len(segment) for segment in self.segments])
        self._article_starts = starts_of([len(segment.catalog) for segment in self.segments])
        single = len(self.segments) == 1
        first = self.segments[0]
        self.vectors: Vectors | StackedRows = first.vectors if single else self._stacked("vectors")
        self._rows: Vectors | FloatRows | StackedRows = (
            first.rows if single else self._stacked("rows")
        )
        self.multilingual: Vectors | StackedRows | None = (
            first.multilingual if single or first.multilingual is None
            else self._stacked("multilingual")
        )  # fmt: skip
        self.passages: Sequence[Passage] = (
            first.passages if single else ChainedPassages([s.passages for s in self.segments])
        )
        self.lexical: LexicalIndex | SegmentedLexical = (
            first.lexical if single else SegmentedLexical([s.lexical for s in self.segments])
        )
        # Plain views of the catalogs' memory maps (indexing a np.memmap costs more per call).
        catalogs = [segment.catalog for segment in self.segments]
        self._row_article_parts = [plain(c.row_articles) for c in catalogs]
        self._date_parts = [plain(c.dates) for c in catalogs]
        self._article_vector_parts = [plain(c.vectors) for c in catalogs]

    def _stacked(self, attribute: str) -> StackedRows:
        parts = [getattr(segment, attribute) for segment in self.segments]
        return StackedRows(parts, int(parts[0].shape[1]))

    @classmethod
    def from_passages(cls, passages: Sequence[Passage], vectors: Vectors) -> Index:
        """An index held in memory only, of passages and their vectors (row order)."""
        texts = [passage.embedding_text for passage in passages]
        meta = {"model": "", "count": len(passages), "articles": None}
        catalog = Catalog.from_passages(passages, vectors)
        segment = Segment(vectors, passages, meta, catalog=catalog, lexical=lexical_of(texts))
        return cls("memory", [segment], meta)

    def __len__(self) -> int:
        return len(self.passages)

    @property
    def codes(self) -> Int8Matrix | None:
        """The int8 copy of the matrix of a one-segment index (None for several segments)."""
        return self.segments[0].codes if len(self.segments) == 1 else None

    @cached_property
    def catalog(self) -> Catalog:
        """All articles as one catalog. Of several segments it is assembled (reading every
        article record and vector): for tools and tests; search uses the methods below."""
        if len(self.segments) == 1:
            return self.segments[0].catalog
        every = np.arange(len(self), dtype=np.intp)
        articles = np.arange(self.article_count(), dtype=np.intp)
        return Catalog(
            self.row_articles(every).astype(np.int32),
            self.article_dates(articles).astype(np.int32),
            self.article_vectors(articles),
            self.entries,
        )

    @property
    def model(self) -> str:
        """The name of the model the passages were embedded with."""
        return str(self.meta["model"])

    @property
    def multilingual_model(self) -> str | None:
        """The multilingual model of the second matrix, or None when there is none."""
        if self.multilingual is None:
            return None
        return str(self.meta.get("multilingual", {}).get("model")) or None

    def nearest(
        self, query: Vectors, k: int, *, multilingual: bool = False
    ) -> tuple[Rows, Vectors]:
        """Rows of the `k` passages closest to `query`, best first, and their cosines: the
        best `k` of a segment's int8 scan, and of one exact scan of all the others, merged
        (ties: the lower row first)."""
        if len(self.segments) == 1:
            return self.segments[0].nearest(query, k, multilingual=multilingual)
        found, exact, exact_rows = [], [], []
        for segment, start in zip(self.segments, self._row_starts[:-1].tolist(), strict=True):
            if segment.scans_int8(multilingual):
                rows, scores = segment.nearest(query, k, multilingual=multilingual)
                found.append((rows + start, scores))
            else:
                exact.append(segment.cosines_all(query, multilingual))
                exact_rows.append(np.arange(start, start + len(segment), dtype=np.intp))
        if exact:
            scores = np.concatenate(exact)
            best = top_rows(scores, k)
            found.append((np.concatenate(exact_rows)[best], scores[best]))
        rows = np.concatenate([rows for rows, _ in found])
        scores = np.concatenate([scores for _, scores in found])
        best = np.lexsort((rows, -scores))[: max(k, 0)]
        return rows[best], scores[best]

    def cosines(self, query: Vectors, rows: Rows, *, multilingual: bool = False) -> Vectors:
        """The cosines of `query` with the given rows only."""
        matrix = self._matrix(multilingual) if multilingual else self._rows
        if isinstance(matrix, StackedRows):  # each segment's rows, dotted where they are read
            dots = [Dots(part, query) for part in matrix.parts]
            return np.asarray(gather(dots, matrix.starts, rows), dtype=np.float32)
        ordered = np.sort(rows)  # ascending rows read the file in order
        return np.asarray(matrix[ordered] @ query)[np.searchsorted(ordered, rows)]

    def lexical_nearest(self, question: str, k: int) -> tuple[Rows, Scores]:
        """Rows of the `k` best passages by BM25, best first, and their scores (only those
        holding a term of the question)."""
        scores = self.lexical.scores(question)
        rows = top_rows(scores, k)
        rows = rows[scores[rows] > 0]
        return rows, scores[rows]

    def idf(self, terms: Sequence[str]) -> npt.NDArray[np.float64]:
        """Each term's BM25 inverse document frequency."""
        return self.lexical.idf(terms)

    @property
    def tokenizer(self) -> Tokenizer:
        """How passages and questions become BM25 terms."""
        return self.lexical.tokenizer

    @property
    def built_at(self) -> str:
        """When the build finished (ISO 8601), or "" for an index held in memory."""
        return str(self.meta.get("built_at", ""))

    def snapshot(self) -> AbstractContextManager[None]:
        """Nothing to hold: a loaded generation never changes."""
        return nullcontext()

    def passage(self, row: int) -> Passage:
        """The passage at `row`."""
        return self.passages[row]

    def row_articles(self, rows: Rows) -> Rows:
        """The article number of each row."""
        shifts = self._article_starts[:-1].tolist()
        numbers = gather(self._row_article_parts, self._row_starts, rows, add=shifts)
        return np.asarray(numbers, dtype=np.intp)

    def article_dates(self, articles: Rows) -> npt.NDArray[np.int64]:
        """Each article's date as a proleptic ordinal, 0 when undated."""
        dates = gather(self._date_parts, self._article_starts, articles)
        return np.asarray(dates, dtype=np.int64)

    def article_vectors(self, articles: Rows) -> Vectors:
        """Each article's L2-normalised mean passage vector."""
        vectors = gather(self._article_vector_parts, self._article_starts, articles)
        return np.asarray(vectors, dtype=np.float32)

    def article_count(self) -> int:
        """The number of articles."""
        return int(self._article_starts[-1])

    def date_range(self) -> tuple[dt.date | None, dt.date | None]:
        """The earliest and the latest article date."""
        ranges = [segment.catalog.date_range() for segment in self.segments]
        firsts = [first for first, _ in ranges if first is not None]
        lasts = [last for _, last in ranges if last is not None]
        return (min(firsts), max(lasts)) if firsts and lasts else (None, None)

    def newest_articles(self, count: int) -> list[ArticleEntry]:
        """The `count` most recent articles, newest first (undated ones last)."""
        if len(self.segments) == 1:
            return self.catalog.newest(count)
        dates = self.article_dates(np.arange(self.article_count(), dtype=np.intp))
        order = np.argsort(-dates, kind="stable")[:count]
        return [self.entries[int(number)] for number in order]

    def _matrix(self, multilingual: bool) -> Vectors | StackedRows:
        matrix = self.multilingual if multilingual else self.vectors
        if matrix is None:
            raise ModelMismatchError("This index has no multilingual vectors")
        return matrix

    @cached_property
    def entries(self) -> list[ArticleEntry]:
        """Every article's record by number, rows counted globally (parsed on first use)."""
        if len(self.segments) == 1:
            return self.segments[0].catalog.entries
        return [
            replace(entry, first=entry.first + int(start))
            for segment, start in zip(self.segments, self._row_starts[:-1], strict=True)
            for entry in segment.catalog.entries
        ]

    def article(self, article_id: str) -> ArticleEntry | None:
        """The article with this id, or None when the index does not hold it."""
        for segment, start in zip(self.segments, self._row_starts[:-1], strict=True):
            entry = segment.catalog.get(article_id)
            if entry is not None:
                return replace(entry, first=entry.first + int(start)) if start else entry
        return None

    def article_ids(self) -> set[str]:
        """The ids of every article."""
        return {entry.id for segment in self.segments for entry in segment.catalog.entries}

    def article_passages(self, article_id: str) -> list[Passage]:
        """All passages of one article, in reading order (none for an unknown article)."""
        entry = self.article(article_id)
        if entry is None:
            return []
        return list(self.passages[entry.first : entry.first + entry.count])

    def verify(self) -> None:
        """Insist every file of every segment has the SHA-256 its build recorded (reads the
        whole index)."""
        if self.folder is None:
            return
        try:
            for folder, meta in _segment_metas(self.folder, self.meta):
                _check_sums(folder, meta.get(layout.CHECKSUMS, {}), self.folder)
        except (OSError, ValueError) as error:
            where = self.folder.parent
            raise IndexCorruptError(f"The index at {where} is damaged ({error})") from error

    @classmethod
    def load(cls, path: Path, *, model: str | None = None, verify: bool | None = None) -> Index:
        """Open the index at `path`; with `model`, insist it was built with that model.

        `verify` checks every file's SHA-256; by default only indexes up to `VERIFY_BYTES`.
        """
        generation = current_generation(path)
        if generation is None:
            raise IndexNotFoundError(f"No index at {path}")
        index = _read_generation(path / generation, verify)
        if model is not None and index.model != model:
            raise ModelMismatchError(
                f"The index at {path} was built with {index.model!r}, not {model!r}"
            )
        return index


# The BM25 parameters the product searches with (tuned by benchmarks/quality.py); the database
# store scores with the same ones.
BM25_K1, BM25_B = 0.9, 0.4


def lexical_of(texts: Sequence[str], *, frequencies: bool = False) -> LexicalIndex:
    """The BM25 index the product searches (with `frequencies`: of an append segment)."""
    return LexicalIndex.build(texts, k1=BM25_K1, b=BM25_B, frequencies=frequencies)


def segment_count(path: Path) -> int:
    """How many segments the index at `path` has (0 when there is none or it is unreadable:
    the next build or open says why)."""
    try:
        generation = current_generation(path)
        if generation is None:
            return 0
        meta = json.loads((path / generation / layout.META).read_text(encoding="utf-8"))
        return len(meta.get(layout.SEGMENTS, [generation]))
    except (OSError, ValueError, IndexCorruptError):
        return 0


def current_generation(path: Path) -> str | None:
    """The name of the generation in use at `path`, or None when there is no index."""
    try:
        name = (path / layout.CURRENT).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise IndexCorruptError(f"The index at {path} cannot be read ({error})") from error
    return name or None


def _read_generation(folder: Path, verify: bool | None) -> Index:
    """Open and cross-check one generation's files; any inconsistency is `IndexCorruptError`."""
    try:
        meta = _read_meta(folder, (layout.FORMAT_VERSION, layout.SEGMENTED_VERSION))
        parts = _segment_metas(folder, meta)
        size = sum(
            _total_bytes(part, part_meta.get(layout.CHECKSUMS, {})) for part, part_meta in parts
        )
        if verify or (verify is None and size <= VERIFY_BYTES):
            for part, part_meta in parts:  # what the shapes and sizes cannot see
                _check_sums(part, part_meta.get(layout.CHECKSUMS, {}), folder)
        segments = [_open_parts(part, part_meta) for part, part_meta in parts]
        if sum(len(segment) for segment in segments) != meta["count"]:
            raise ValueError(f"the segments do not hold the {meta['count']} passages promised")
        index = Index(folder.name, segments, meta, folder=folder)
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise IndexCorruptError(f"The index at {folder.parent} is damaged ({error})") from error
    except IndexCorruptError as error:  # the lexical index names its own folder
        raise IndexCorruptError(f"The index at {folder.parent} is damaged ({error})") from error
    return index


def _read_meta(folder: Path, versions: tuple[int, ...]) -> dict[str, Any]:
    """A meta.json of a known format and version."""
    meta: dict[str, Any] = json.loads((folder / layout.META).read_text(encoding="utf-8"))
    if meta.get("format") != layout.FORMAT or meta.get("version") not in versions:
        raise ValueError(f"unknown format {meta.get('format')!r} v{meta.get('version')!r}")
    return meta


def _segment_metas(folder: Path, meta: dict[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
    """Each segment's folder and meta.json: the generation itself when it is one segment,
    else each listed segment's, insisting on the SHA-256 the generation recorded for it."""
    if meta.get("version") == layout.FORMAT_VERSION:
        return [(folder, meta)]
    parts = []
    for record in meta[layout.SEGMENTS]:
        part = folder / record["name"]
        if sha256(part / layout.META) != record[layout.CHECKSUMS]:
            raise ValueError(f"{record['name']}/{layout.META} does not match its checksum")
        part_meta = _read_meta(part, (layout.FORMAT_VERSION,))
        if (part_meta["model"], part_meta["count"], _multilingual(part_meta)) != (
            meta["model"],
            record["count"],
            _multilingual(meta),
        ):
            raise ValueError(f"segment {record['name']} does not match the generation")
        parts.append((part, part_meta))
    return parts


def _multilingual(meta: dict[str, Any]) -> str | None:
    return meta.get("multilingual", {}).get("model")  # type: ignore[no-any-return]


def _open_parts(folder: Path, meta: dict[str, Any]) -> Segment:
    """Map every file of a segment, insisting on the counts and shapes meta.json promises."""
    count, dimension = meta["count"], meta["dimension"]
    vectors = open_array(folder / layout.VECTORS, np.float32, (count, dimension))
    multilingual = None
    if "multilingual" in meta:
        shape = (count, meta["multilingual"]["dimension"])
        multilingual = open_array(folder / layout.MULTILINGUAL_VECTORS, np.float32, shape)
    passages = PassageStore(
        folder / layout.PASSAGES, np.load(folder / layout.OFFSETS, allow_pickle=False)
    )
    if len(passages) != count:
        raise ValueError(f"{len(passages)} passages, expected {count}")
    catalog = Catalog.load(folder, count, meta["articles"], dimension)
    lexical = LexicalIndex.load(folder / layout.LEXICAL)
    if len(lexical) != count:
        raise ValueError(f"the BM25 index has {len(lexical)} passages, expected {count}")
    codes = Int8Matrix.load(folder) if (folder / CODES).exists() else None
    if codes is not None and codes.codes.shape != (count, dimension):
        raise ValueError(f"{CODES} is {codes.codes.shape}, expected {(count, dimension)}")
    return Segment(
        vectors, passages, meta,
        catalog=catalog, lexical=lexical, multilingual=multilingual, codes=codes, folder=folder,
    )  # fmt: skip


def _total_bytes(folder: Path, sums: dict[str, str]) -> int:
    return sum((folder / name).stat().st_size for name in sums)


def _check_sums(folder: Path, sums: dict[str, str], generation: Path) -> None:
    """Insist every file has the SHA-256 its build recorded, so a damaged byte is an error
    (named from the `generation` folder: "vectors.npy", or "<segment>/vectors.npy")."""
    for name, digest in sums.items():
        if sha256(folder / name) != digest:
            raise ValueError(
                f"{(folder / name).relative_to(generation)} does not match its checksum"
            )


def sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
