"""The articles of an index: which article each passage row belongs to, and what each article is.

Search needs three numbers per row or per article on every question, so those are plain numpy
arrays (memory-mapped from disk); the article records themselves (title, hash, rows, ...) are
needed only by builds, the "Article" button and /about, so they are parsed on first use. Opening
an index of a million passages therefore reads none of them.

Files of a generation (plain ``.npy``, ``allow_pickle=False``, and JSON Lines)::

    articles.jsonl        one record per article, in row order: id, hash, title, date, source,
                          url, rows ([first row, passage count])
    row_articles.npy      int32, per passage row: the article's number (its line in articles.jsonl)
    article_dates.npy     int32, per article: the date's proleptic ordinal, 0 when undated
    article_vectors.npy   float32, per article: the L2-normalised mean of its passage vectors
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings.encoders.base import Vectors
from embeddings.index.arrays import open_array
from embeddings.passages import Passage

ARTICLES = "articles.jsonl"
ROW_ARTICLES = "row_articles.npy"
ARTICLE_DATES = "article_dates.npy"
ARTICLE_VECTORS = "article_vectors.npy"

Numbers = npt.NDArray[np.int32]


@dataclass(frozen=True)
class ArticleEntry:
    """One indexed article: its content hash (for incremental builds) and its rows."""

    id: str
    hash: str
    title: str
    date: dt.date | None
    source: str
    url: str | None
    first: int  # its first passage row
    count: int  # how many passages it has

    def to_json(self) -> dict[str, Any]:
        """The articles.jsonl record; `from_json` reads it back."""
        return {
            "id": self.id,
            "hash": self.hash,
            "title": self.title,
            "date": self.date.isoformat() if self.date else None,
            "source": self.source,
            "url": self.url,
            "rows": [self.first, self.count],
        }

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> ArticleEntry:
        """The entry an articles.jsonl record describes."""
        first, count = record["rows"]
        date = record["date"]
        return cls(
            id=record["id"],
            hash=record["hash"],
            title=record["title"],
            date=dt.date.fromisoformat(date) if date else None,
            source=record["source"],
            url=record.get("url"),
            first=int(first),
            count=int(count),
        )


class Catalog:
    """The articles of one index generation, by number (the order of their rows)."""

    def __init__(
        self,
        row_articles: Numbers,
        dates: Numbers,
        vectors: Vectors,
        entries: Sequence[ArticleEntry] | Path,
    ) -> None:
        self.row_articles = row_articles
        self.dates = dates
        self.vectors = vectors
        self._source = entries

    def __len__(self) -> int:
        return len(self.dates)

    @classmethod
    def build(cls, entries: Sequence[ArticleEntry], passage_vectors: Vectors) -> Catalog:
        """The catalog of `entries`, whose rows index `passage_vectors`."""
        counts = np.array([entry.count for entry in entries], dtype=np.int64)
        row_articles = np.repeat(np.arange(len(entries), dtype=np.int32), counts)
        ordinals = [entry.date.toordinal() if entry.date else 0 for entry in entries]
        dates = np.array(ordinals, dtype=np.int32)
        return cls(row_articles, dates, _mean_vectors(passage_vectors, entries), list(entries))

    @classmethod
    def from_passages(cls, passages: Sequence[Passage], passage_vectors: Vectors) -> Catalog:
        """The catalog of passages that are not (yet) in an index: runs of one article id."""
        entries: list[ArticleEntry] = []
        for row, passage in enumerate(passages):
            if entries and entries[-1].id == passage.article_id:
                last = entries.pop()
                entries.append(ArticleEntry(**{**last.__dict__, "count": last.count + 1}))
                continue
            entries.append(
                ArticleEntry(
                    passage.article_id, "", passage.title, passage.date, passage.source,
                    passage.url, row, 1,
                )
            )  # fmt: skip
        return cls.build(entries, passage_vectors)

    def save(self, folder: Path) -> None:
        """Write the four files into `folder` (a generation being built)."""
        lines = (json.dumps(entry.to_json(), ensure_ascii=False) + "\n" for entry in self.entries)
        (folder / ARTICLES).write_text("".join(lines), encoding="utf-8")
        np.save(folder / ROW_ARTICLES, self.row_articles, allow_pickle=False)
        np.save(folder / ARTICLE_DATES, self.dates, allow_pickle=False)
        np.save(folder / ARTICLE_VECTORS, self.vectors, allow_pickle=False)

    @classmethod
    def load(cls, folder: Path, rows: int, articles: int, dimension: int) -> Catalog:
        """Open the catalog of `folder`, checking every shape; damage is ValueError."""
        row_articles = open_array(folder / ROW_ARTICLES, np.int32, (rows,))
        dates = open_array(folder / ARTICLE_DATES, np.int32, (articles,))
        vectors = open_array(folder / ARTICLE_VECTORS, np.float32, (articles, dimension))
        if not (folder / ARTICLES).is_file():
            raise ValueError(f"{ARTICLES} is missing")
        return cls(row_articles, dates, vectors, folder / ARTICLES)

    @cached_property
    def entries(self) -> list[ArticleEntry]:
        """Every article's record, by number (read from disk on first use)."""
        if not isinstance(self._source, Path):
            return list(self._source)
        with self._source.open(encoding="utf-8") as file:
            entries = [ArticleEntry.from_json(json.loads(line)) for line in file]
        if len(entries) != len(self):
            raise ValueError(f"{ARTICLES} has {len(entries)} articles, expected {len(self)}")
        return entries

    @cached_property
    def numbers(self) -> dict[str, int]:
        """Article id -> article number."""
        return {entry.id: number for number, entry in enumerate(self.entries)}

    def get(self, article_id: str) -> ArticleEntry | None:
        """The article with this id, or None when the index does not hold it."""
        number = self.numbers.get(article_id)
        return None if number is None else self.entries[number]

    def date_range(self) -> tuple[dt.date | None, dt.date | None]:
        """The earliest and the latest article date (None, None when no article is dated)."""
        dated = np.asarray(self.dates)[np.asarray(self.dates) > 0]
        if dated.size == 0:
            return None, None
        return dt.date.fromordinal(int(dated.min())), dt.date.fromordinal(int(dated.max()))

    def newest(self, count: int) -> list[ArticleEntry]:
        """The `count` most recent articles, newest first (undated ones last)."""
        order = np.argsort(-np.asarray(self.dates, dtype=np.int64), kind="stable")[:count]
        return [self.entries[int(number)] for number in order]


def _mean_vectors(vectors: Vectors, entries: Sequence[ArticleEntry]) -> Vectors:
    """Per article, the L2-normalised mean of its rows of `vectors` (zeros without rows)."""
    dimension = vectors.shape[1] if vectors.ndim == 2 else 0
    means = np.zeros((len(entries), dimension), dtype=np.float32)
    filled = [number for number, entry in enumerate(entries) if entry.count]
    if filled and dimension:
        # Rows are contiguous per article and in article order: one pass sums every article.
        firsts = [entries[number].first for number in filled]
        sums = np.add.reduceat(np.asarray(vectors, dtype=np.float32), firsts, axis=0)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        means[filled] = sums / np.where(norms == 0, 1, norms)
    return means
