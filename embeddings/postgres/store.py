"""Reading the index in PostgreSQL: `SearchStore` over one connection per thread.

Each read is a transaction of its own, except inside `snapshot()`, where a question's reads
share one repeatable-read transaction on the thread's connection, so they all see one build.
The store is always current: a new build is seen by the next transaction, with no reopening.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, LiteralString

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector.psycopg import register_vector

from embeddings.encoders.base import Vectors
from embeddings.errors import IndexNotFoundError, ModelMismatchError
from embeddings.index.catalog import ArticleEntry
from embeddings.index.lexical import Tokenizer
from embeddings.passages import Passage
from embeddings.postgres import bm25, connect, describe, schema, unavailable

Rows = npt.NDArray[np.intp]
Scores = npt.NDArray[np.float32]
Connection = schema.Connection

# pgvector's HNSW search returns at most `hnsw.ef_search` rows (40 by default), and finds more
# of the true nearest the deeper its candidate list: each dense search sets it to ten times its
# shortlist's depth, as far as the server allows (see benchmarks/results/store.md). The query
# orders by the distance the index holds (half precision), so the index serves it, and returns
# the full vectors' cosines, best first; without a filter no iterative scan is needed: a search
# with ef_search >= k returns k rows.
EF_SEARCH_FACTOR = 10
MAX_EF_SEARCH = 1000
# Up to this many passages the nearest are found by reading every vector instead (10 ms at
# 10,000): exact, as the index folder's answers are at that size.
EXACT_ROWS = 20_000
# The HNSW query, for vectors of the dimension put in for {dimension}.
_NEAREST = """SELECT number, cosine
              FROM (SELECT number, -(vector <#> %(q)s) AS cosine FROM newsqa_passages
                    ORDER BY vector::halfvec({dimension}) <#> %(q)s::halfvec({dimension})
                    LIMIT %(k)s) AS found
              ORDER BY cosine DESC, number"""
# "+ 0" orders by an expression the HNSW index cannot serve: every vector is read.
_EXACT: LiteralString = """SELECT number, -(vector <#> %(q)s) FROM newsqa_passages
                            ORDER BY (vector <#> %(q)s) + 0, number LIMIT %(k)s"""
_PASSAGE = """SELECT p.id, a.id, p.ordinal, a.title, a.date, a.source, p.text, a.url
              FROM newsqa_passages AS p JOIN newsqa_articles AS a ON a.number = p.article"""


class PostgresStore:
    """The index in a PostgreSQL database, read through one connection per thread."""

    def __init__(
        self,
        url: str,
        model: str,
        tokenizer: Tokenizer,
        *,
        dimension: int,
        exact_rows: int = EXACT_ROWS,
    ):
        self.url = url
        self._model = model
        self._tokenizer = tokenizer
        self._nearest = _NEAREST.format(dimension=int(dimension)).encode()
        self.exact_rows = exact_rows  # up to this many passages, nearest() reads every vector
        self._connections = _Connections(url)
        self._local = threading.local()  # the connection of a snapshot on this thread

    @classmethod
    def open(
        cls, url: str, *, model: str | None = None, exact_rows: int = EXACT_ROWS
    ) -> PostgresStore:
        """Open the index in the database at `url`; with `model`, insist it was built with it."""
        with unavailable(url), connect(url) as connection:
            schema.require_current(connection, url)
            row = connection.execute(
                "SELECT model, tokenizer, dimension FROM newsqa_meta"
            ).fetchone()
        if row is None:
            raise IndexNotFoundError(f"No index in the database at {describe(url)}")
        built_with, tokenizer = str(row[0]), Tokenizer(**row[1])
        if model is not None and built_with != model:
            raise ModelMismatchError(
                f"The index in the database at {describe(url)} was built with {built_with!r}, "
                f"not {model!r}"
            )
        return cls(url, built_with, tokenizer, dimension=int(row[2]), exact_rows=exact_rows)

    def close(self) -> None:
        """Close every connection the store made."""
        self._connections.close()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Within it, this thread's reads share one transaction: one build."""
        if getattr(self._local, "connection", None) is not None:
            yield
            return
        with unavailable(self.url):
            connection = self._connections.get()
            connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            connection.read_only = True
            try:
                with connection.transaction():
                    self._local.connection = connection
                    self._check_model(connection)
                    yield
            finally:
                self._local.connection = None
                if not connection.broken:
                    connection.isolation_level = connection.read_only = None

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """The snapshot's connection, or this thread's in a transaction of its own."""
        held = getattr(self._local, "connection", None)
        if held is not None:
            yield held
            return
        with unavailable(self.url):
            connection = self._connections.get()
            with connection.transaction():
                yield connection

    def _check_model(self, connection: Connection) -> None:
        """A rebuild with another model makes this store's questions meaningless: refuse."""
        row = connection.execute("SELECT model FROM newsqa_meta").fetchone()
        if row is not None and row[0] != self._model:
            raise ModelMismatchError(
                f"The index in the database at {describe(self.url)} is now built with "
                f"{row[0]!r}, not {self._model!r}"
            )

    # --- what the index is ---------------------------------------------------------------

    @property
    def generation(self) -> str:
        return str(self._meta()[0])

    @property
    def built_at(self) -> str:
        built = self._meta()[1]
        if not isinstance(built, dt.datetime):
            return ""
        return built.astimezone(dt.UTC).isoformat(timespec="seconds")

    @property
    def model(self) -> str:
        return self._model

    @property
    def multilingual_model(self) -> str | None:
        return None  # the database holds the main model's vectors only

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    def __len__(self) -> int:
        return int(self._meta()[2])

    def _meta(self) -> tuple[Any, ...]:
        """The build's number, time and passage count."""
        with self._connection() as connection:
            row = connection.execute(
                "SELECT generation, built_at, passages FROM newsqa_meta"
            ).fetchone()
        return tuple(row) if row else (0, None, 0)

    # --- dense and lexical shortlists ------------------------------------------------------

    def nearest(
        self, query: Vectors, k: int, *, multilingual: bool = False
    ) -> tuple[Rows, Vectors]:
        _no_multilingual(multilingual)
        with self._connection() as connection:
            # Not prepared: a prepared plan would not see a later ef_search.
            found = connection.execute(
                _dense_query(connection, k, self.exact_rows, self._nearest),
                {"q": np.asarray(query, dtype=np.float32), "k": k},
                prepare=False,
            ).fetchall()
        return _rows(found), np.array([c for _, c in found], dtype=np.float32)

    def cosines(self, query: Vectors, rows: Rows, *, multilingual: bool = False) -> Vectors:
        _no_multilingual(multilingual)
        with self._connection() as connection:
            found = dict(
                connection.execute(
                    """SELECT number, -(vector <#> %s) FROM newsqa_passages
                       WHERE number = ANY(%s)""",
                    (np.asarray(query, dtype=np.float32), [int(r) for r in rows]),
                ).fetchall()
            )
        return np.array([found[int(row)] for row in rows], dtype=np.float32)

    def lexical_nearest(self, question: str, k: int) -> tuple[Rows, Scores]:
        with self._connection() as connection:
            return bm25.shortlist(connection, self._tokenizer, question, k)

    def idf(self, terms: Sequence[str]) -> npt.NDArray[np.float64]:
        with self._connection() as connection:
            return bm25.idf(connection, terms)

    # --- passages and articles -------------------------------------------------------------

    def passage(self, row: int) -> Passage:
        with self._connection() as connection:
            found = connection.execute(f"{_PASSAGE} WHERE p.number = %s", (row,)).fetchone()
        if found is None:
            raise IndexError(row)
        return _passage(found)

    def article_passages(self, article_id: str) -> list[Passage]:
        with self._connection() as connection:
            found = connection.execute(
                f"{_PASSAGE} WHERE a.id = %s ORDER BY p.ordinal", (article_id,)
            ).fetchall()
        return [_passage(row) for row in found]

    def row_articles(self, rows: Rows) -> Rows:
        found = self._by_number(
            "SELECT number, article FROM newsqa_passages WHERE number = ANY(%s)", rows
        )
        return np.array([found[int(row)] for row in rows], dtype=np.intp)

    def article_dates(self, articles: Rows) -> npt.NDArray[np.int64]:
        found = self._by_number(
            "SELECT number, date FROM newsqa_articles WHERE number = ANY(%s)", articles
        )
        days = [found[int(number)] for number in articles]
        return np.array([day.toordinal() if day else 0 for day in days], dtype=np.int64)

    def article_vectors(self, articles: Rows) -> Vectors:
        found = self._by_number(
            "SELECT number, vector FROM newsqa_articles WHERE number = ANY(%s)", articles
        )
        if len(articles) == 0:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[int(number)].to_numpy() for number in articles]).astype(np.float32)

    def _by_number(self, query: Any, numbers: Rows) -> dict[int, Any]:
        with self._connection() as connection:
            # Binary: a vector parsed from text costs a millisecond per hundred.
            found = connection.execute(query, ([int(n) for n in numbers],), binary=True).fetchall()
        return {int(number): value for number, value in found}

    def article_count(self) -> int:
        with self._connection() as connection:
            row = connection.execute("SELECT count(*) FROM newsqa_articles").fetchone()
        return int(row[0]) if row else 0

    def date_range(self) -> tuple[dt.date | None, dt.date | None]:
        with self._connection() as connection:
            row = connection.execute("SELECT min(date), max(date) FROM newsqa_articles").fetchone()
        return (row[0], row[1]) if row else (None, None)

    def newest_articles(self, count: int) -> list[ArticleEntry]:
        with self._connection() as connection:
            found = connection.execute(
                """SELECT a.id, a.hash, a.title, a.date, a.source, a.url,
                          coalesce(min(p.number), 0), count(p.number)
                   FROM newsqa_articles AS a
                   LEFT JOIN newsqa_passages AS p ON p.article = a.number
                   GROUP BY a.number ORDER BY a.date DESC NULLS LAST, a.number LIMIT %s""",
                (count,),
            ).fetchall()
        return [ArticleEntry(*row) for row in found]


@dataclass(frozen=True)
class DatabaseLocation:
    """An index in a PostgreSQL database; one store serves every build."""

    url: str

    def open(self, model: str) -> PostgresStore:
        return PostgresStore.open(self.url, model=model)

    def current(self) -> str | None:
        return None  # an open store reads each new build already


class _Connections:
    """One connection per thread, made when the thread first reads and made again when the
    server has dropped it: a question fails at once while the server is down (a pool would
    wait for a connection), and the first one after it is back succeeds."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._local = threading.local()
        self._made: list[Connection] = []
        self._lock = threading.Lock()

    def get(self) -> Connection:
        """This thread's connection, idle and alive (autocommit: transactions are explicit)."""
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is not None and _alive(connection):
            return connection
        connection = connect(self.url)
        connection.autocommit = True
        register_vector(connection)
        self._local.connection = connection
        with self._lock:
            self._made.append(connection)
        return connection

    def close(self) -> None:
        with self._lock:
            for connection in self._made:
                connection.close()
            self._made.clear()


def _alive(connection: Connection) -> bool:
    """Whether the server still answers on `connection` (an empty query: one round trip)."""
    if connection.closed or connection.broken:
        return False
    try:
        connection.execute("")
    except psycopg.OperationalError:
        connection.close()
        return False
    return True


def _dense_query(connection: Connection, k: int, exact_rows: int, nearest: bytes) -> Any:
    """The query for the `k` nearest passages: exact in a small index, else `nearest`, by
    HNSW with a candidate list ten times as deep (set for this transaction only)."""
    row = connection.execute("SELECT passages FROM newsqa_meta").fetchone()
    if row is not None and row[0] <= exact_rows:
        return _EXACT
    ef_search = str(min(max(EF_SEARCH_FACTOR * k, 40), MAX_EF_SEARCH))
    connection.execute("SELECT set_config('hnsw.ef_search', %s, true)", (ef_search,))
    return nearest


def _no_multilingual(multilingual: bool) -> None:
    if multilingual:
        raise ModelMismatchError("The index in the database has no multilingual vectors")


def _rows(found: list[Any]) -> Rows:
    return np.array([row for row, _ in found], dtype=np.intp)


def _passage(row: Sequence[Any]) -> Passage:
    passage_id, article_id, ordinal, title, date, source, text, url = row
    return Passage(passage_id, article_id, ordinal, title, date, source, text, url)
