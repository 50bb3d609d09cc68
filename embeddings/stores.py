"""What search needs from a store of passages, and where a store is.

Two stores implement `SearchStore`: the index folder (`embeddings.index.Index`, numpy files,
the default) and a PostgreSQL database (`embeddings.postgres`). `embeddings.search` sees only
this interface, so both rank alike.

A row is a passage's number in its store and an article number an article's: integers that
stay valid for one snapshot of the store. Search reads several times per question, so it
reads inside `snapshot()`, which the database store makes one consistent transaction.
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit

import numpy as np
import numpy.typing as npt

from embeddings.articles import Article
from embeddings.encoders.base import Encoder, Vectors
from embeddings.errors import PostgresMissingError
from embeddings.index.build import BuildReport
from embeddings.index.catalog import ArticleEntry
from embeddings.index.index import Index, current_generation
from embeddings.index.lexical import Tokenizer
from embeddings.passages import Passage

Rows = npt.NDArray[np.intp]
Scores = npt.NDArray[np.float32]


class SearchStore(Protocol):
    """The passages, vectors, BM25 statistics and articles of one index."""

    @property
    def generation(self) -> str:
        """The name of the build being read."""
        ...

    @property
    def model(self) -> str:
        """The name of the model the passages were embedded with."""
        ...

    @property
    def multilingual_model(self) -> str | None:
        """The multilingual model of a second matrix, or None when there is none."""
        ...

    @property
    def built_at(self) -> str:
        """When the build finished (ISO 8601), or "" when unknown."""
        ...

    @property
    def tokenizer(self) -> Tokenizer:
        """How the passages were cut into BM25 terms; questions are cut the same way."""
        ...

    def __len__(self) -> int:
        """The number of passages."""
        ...

    def snapshot(self) -> AbstractContextManager[None]:
        """Within it, every read sees the same build."""
        ...

    def nearest(
        self, query: Vectors, k: int, *, multilingual: bool = False
    ) -> tuple[Rows, Vectors]:
        """Rows of the `k` passages closest to a normalised `query`, best first, and their
        cosines."""
        ...

    def cosines(self, query: Vectors, rows: Rows, *, multilingual: bool = False) -> Vectors:
        """The cosines of `query` with the given rows, in their order."""
        ...

    def lexical_nearest(self, question: str, k: int) -> tuple[Rows, Scores]:
        """Rows of the `k` best passages by BM25 for `question`, best first, and their scores;
        only passages that hold a term of the question."""
        ...

    def idf(self, terms: Sequence[str]) -> npt.NDArray[np.float64]:
        """Each term's BM25 inverse document frequency (Lucene's form)."""
        ...

    def passage(self, row: int) -> Passage:
        """The passage at `row`."""
        ...

    def row_articles(self, rows: Rows) -> Rows:
        """The article number of each row."""
        ...

    def article_dates(self, articles: Rows) -> npt.NDArray[np.int64]:
        """Each article's date as a proleptic ordinal, 0 when undated."""
        ...

    def article_vectors(self, articles: Rows) -> Vectors:
        """Each article's L2-normalised mean passage vector."""
        ...

    def article_passages(self, article_id: str) -> list[Passage]:
        """All passages of one article, in reading order (none for an unknown article)."""
        ...

    def article_count(self) -> int:
        """The number of articles."""
        ...

    def date_range(self) -> tuple[dt.date | None, dt.date | None]:
        """The earliest and the latest article date (None, None when no article is dated)."""
        ...

    def newest_articles(self, count: int) -> list[ArticleEntry]:
        """The `count` most recent articles, newest first (undated ones last)."""
        ...


class StoreLocation(Protocol):
    """Where a store is: opens it, and names the build a reader should be on."""

    def open(self, model: str) -> SearchStore:
        """The store, insisting it was built with `model`."""
        ...

    def current(self) -> str | None:
        """The generation a newly opened store would read; None when an open store needs no
        reopening to see new builds."""
        ...


@dataclass(frozen=True)
class FolderLocation:
    """An index folder (numpy files)."""

    path: Path

    def open(self, model: str) -> SearchStore:
        return Index.load(self.path, model=model)

    def current(self) -> str | None:
        return current_generation(self.path)


def is_database_url(store: str) -> bool:
    """Whether `store` names a PostgreSQL database (the only kind of `--store` so far)."""
    return store.startswith(("postgresql://", "postgres://"))


def redact_url(url: str) -> str:
    """The database URL for messages and logs: any password shown as ***."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    if parts.password is None and all(key != "password" for key, _ in query):
        return url
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    hidden = urlencode([(k, "***" if k == "password" else v) for k, v in query], safe="*/")
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{hidden}" if hidden else "")


def location_of(index_dir: Path, store: str | None) -> StoreLocation:
    """The database at `store` when given, else the index folder `index_dir`."""
    if store is None:
        return FolderLocation(index_dir)
    location: StoreLocation = _postgres("store").DatabaseLocation(store)
    return location


def build_in_database(
    articles: Sequence[Article],
    encoder: Encoder,
    store: str,
    *,
    progress: bool = False,
    only_these: bool = False,
) -> BuildReport:
    """Bring the index in the database at `store` up to date with `articles` (with
    `only_these`, refusing a database that holds other articles)."""
    report: BuildReport = _postgres("build").build_database(
        articles, encoder, store, progress=progress, only_these=only_these
    )
    return report


def _postgres(module: str) -> Any:
    """A module of `embeddings.postgres`, imported only when a database is asked for."""
    try:
        return importlib.import_module(f"embeddings.postgres.{module}")
    except ImportError as error:
        raise PostgresMissingError(
            f"A PostgreSQL store needs packages that are not installed ({error.name})"
        ) from error
