"""Building the index in PostgreSQL: the same incremental rules as the index folder.

Only new and changed articles (by content hash) are embedded; articles no longer given are
dropped; another model's index is replaced. The whole build is one transaction under an
advisory lock, so readers see the previous build or this one, never a part of it, and a
second build at the same time is refused rather than queued.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pgvector.psycopg import register_vector

from embeddings.articles import Article
from embeddings.encoders.base import Encoder, Vectors
from embeddings.errors import IndexBusyError, NoArticlesError, StoreInUseError
from embeddings.index.build import BuildReport
from embeddings.index.lexical import Tokenizer
from embeddings.passages import Passage, split_article
from embeddings.postgres import bm25, connect, describe, schema, unavailable

Connection = schema.Connection

# The advisory lock every build takes (any fixed number; this one spells "newsqa").
BUILD_LOCK = 0x6E6577737161

log = logging.getLogger(__name__)


@dataclass
class _Plan:
    """What a build changes: articles to add (with their passages) and article numbers to
    drop (deleted, changed, or all of another model's index)."""

    add: list[tuple[Article, list[Passage]]] = field(default_factory=list)
    drop: list[int] = field(default_factory=list)
    kept: int = 0  # passages reused

    @property
    def passages(self) -> list[Passage]:
        return [passage for _, passages in self.add for passage in passages]


def build_database(
    articles: Sequence[Article],
    encoder: Encoder,
    url: str,
    *,
    progress: bool = False,
    only_these: bool = False,
) -> BuildReport:
    """Bring the index in the database at `url` up to date with `articles`.

    With `only_these`, a database holding other articles is refused rather than emptied of
    them: an evaluation must not replace an index in use.
    """
    if not articles:
        raise NoArticlesError("There are no articles to index")
    started = time.perf_counter()
    with unavailable(url), connect(url) as connection, connection.transaction():
        _lock(connection, url)
        schema.require_vectors(connection, url)  # before anything is embedded
        if only_these:
            _refuse_others(connection, url, articles)
        fresh = not schema.upgrade(connection, url) or _model(connection) != encoder.name
        known = {} if fresh else _known_articles(connection)
        plan = _plan(articles, known, encoder)
        if fresh:
            plan.drop = []  # the tables are made anew
        written = fresh or bool(plan.add or plan.drop)
        if written:
            vectors = _embed(encoder, plan.passages, progress)
            if fresh:
                schema.create(connection, vectors.shape[1])
            register_vector(connection)
            _write(connection, plan, vectors, encoder.name, fresh=fresh)
            if fresh:
                schema.index_after_load(connection, vectors.shape[1], len(plan.passages))
    count = plan.kept + len(plan.passages)
    removed = len(set(known) - {article.id for article in articles})
    return BuildReport(
        articles=len(articles), passages=count, embedded=len(plan.passages), reused=plan.kept,
        removed_articles=removed, written=written, seconds=time.perf_counter() - started,
    )  # fmt: skip


def _lock(connection: Connection, url: str) -> None:
    row = connection.execute("SELECT pg_try_advisory_xact_lock(%s)", (BUILD_LOCK,)).fetchone()
    if not (row and row[0]):
        raise IndexBusyError(f"Another build is writing the index in {describe(url)}")


def _refuse_others(connection: Connection, url: str, articles: Sequence[Article]) -> None:
    """Refuse a database that holds articles besides `articles`."""
    if schema.installed_version(connection) is None:
        return
    row = connection.execute(
        "SELECT count(*) FROM newsqa_articles WHERE NOT (id = ANY(%s))",
        ([article.id for article in articles],),
    ).fetchone()
    if row is not None and row[0]:
        raise StoreInUseError(f"The database at {describe(url)} holds {row[0]} other articles")


def _model(connection: Connection) -> str | None:
    row = connection.execute("SELECT model FROM newsqa_meta").fetchone()
    return None if row is None else str(row[0])


def _known_articles(connection: Connection) -> dict[str, tuple[int, str, int]]:
    """Article id -> (number, content hash, passage count) of the index in the database."""
    found = connection.execute(
        """SELECT a.id, a.number, a.hash, count(p.number)
           FROM newsqa_articles AS a LEFT JOIN newsqa_passages AS p ON p.article = a.number
           GROUP BY a.number"""
    ).fetchall()
    return {row[0]: (int(row[1]), str(row[2]), int(row[3])) for row in found}


def _plan(
    articles: Sequence[Article], known: dict[str, tuple[int, str, int]], encoder: Encoder
) -> _Plan:
    plan = _Plan()
    given = {article.id for article in articles}
    plan.drop = [number for article_id, (number, _, _) in known.items() if article_id not in given]
    seen: set[str] = set()
    for article in articles:
        if article.id in seen:  # the database holds one article per id
            log.warning("Article %s appears twice; the database keeps the first", article.id)
            continue
        seen.add(article.id)
        old = known.get(article.id)
        if old is not None and old[1] == article.content_hash:
            plan.kept += old[2]
            continue
        if old is not None:
            plan.drop.append(old[0])
        passages = split_article(article, encoder.count_tokens, encoder.max_tokens)
        plan.add.append((article, passages))
    return plan


def _embed(encoder: Encoder, passages: list[Passage], progress: bool) -> Vectors:
    """The passages' vectors; with none, the model is not even loaded."""
    if not passages:
        return np.zeros((0, 0), dtype=np.float32)
    return encoder.encode_passages([p.embedding_text for p in passages], progress=progress)


def _write(
    connection: Connection, plan: _Plan, vectors: Vectors, model: str, *, fresh: bool
) -> None:
    """Drop the articles the plan drops, add the ones it adds, and record the build
    (`fresh`: into tables made in this transaction)."""
    tokenizer = Tokenizer()
    removed = (0, 0)
    if plan.drop:
        bm25.remove(connection, plan.drop)
        removed = _drop_articles(connection, plan.drop)
    numbers = _insert_articles(connection, plan, vectors)
    kept = _corpus(connection, removed)
    length = _insert_passages(connection, plan, numbers, vectors, tokenizer, kept, fresh)
    change = (len(plan.passages) - removed[0], length - removed[1])
    _record_build(connection, model, vectors, tokenizer, change)
    # Fresh statistics, so the planner scores BM25 from each asked term's postings alone.
    connection.execute("ANALYZE newsqa_meta, newsqa_articles, newsqa_passages, newsqa_terms, "
                       "newsqa_postings")  # fmt: skip


def _corpus(connection: Connection, removed: tuple[int, int]) -> tuple[int, int]:
    """The passages and total BM25 length the index keeps from the previous build."""
    row = connection.execute("SELECT passages, total_length FROM newsqa_meta").fetchone()
    return (int(row[0]) - removed[0], int(row[1]) - removed[1]) if row else (0, 0)


def _drop_articles(connection: Connection, numbers: list[int]) -> tuple[int, int]:
    """Delete articles (their passages follow; `bm25.remove` has taken their postings); the
    passages and the BM25 length they held."""
    row = connection.execute(
        "SELECT count(*), coalesce(sum(length), 0) FROM newsqa_passages WHERE article = ANY(%s)",
        (numbers,),
    ).fetchone()
    connection.execute("DELETE FROM newsqa_articles WHERE number = ANY(%s)", (numbers,))
    return (int(row[0]), int(row[1])) if row else (0, 0)


def _insert_articles(connection: Connection, plan: _Plan, vectors: Vectors) -> dict[str, int]:
    """Insert the new articles, in the order given; article id -> number."""
    sql = (
        "COPY newsqa_articles (id, hash, title, date, source, url, vector) "
        "FROM STDIN (FORMAT BINARY)"
    )
    start = 0
    with connection.cursor() as cursor, cursor.copy(sql) as copy:
        copy.set_types(["text", "text", "text", "date", "text", "text", "vector"])
        for article, passages in plan.add:
            mean = _mean(vectors[start : start + len(passages)], vectors.shape[1])
            start += len(passages)
            copy.write_row((
                _text(article.id), article.content_hash, _text(article.title), article.date,
                _text(article.source), article.url and _text(article.url), mean,
            ))  # fmt: skip
    ids = [_text(article.id) for article, _ in plan.add]
    found = connection.execute(
        "SELECT id, number FROM newsqa_articles WHERE id = ANY(%s)", (ids,)
    ).fetchall()
    return {str(article_id): int(number) for article_id, number in found}


def _text(value: str) -> str:
    """`value` as PostgreSQL can store it: text there cannot hold NUL characters."""
    return value.replace("\x00", "")


def _mean(vectors: Vectors, dimension: int) -> Vectors:
    """The L2-normalised mean of an article's passage vectors (zeros without passages)."""
    total = vectors.sum(axis=0, dtype=np.float32) if len(vectors) else np.zeros(dimension)
    norm = float(np.linalg.norm(total))
    return np.asarray(total / (norm or 1.0), dtype=np.float32)


def _insert_passages(
    connection: Connection,
    plan: _Plan,
    numbers: dict[str, int],
    vectors: Vectors,
    tokenizer: Tokenizer,
    kept: tuple[int, int],
    fresh: bool,
) -> int:
    """Insert the new passages and their BM25 postings (`kept`: the passages and length
    already in the index); the BM25 length they add."""
    passages = plan.passages
    terms = [bm25.passage_terms(tokenizer, p.embedding_text) for p in passages]
    sql = (
        "COPY newsqa_passages (article, ordinal, id, text, length, vector) "
        "FROM STDIN (FORMAT BINARY)"
    )
    with connection.cursor() as cursor, cursor.copy(sql) as copy:
        copy.set_types(["int8", "int4", "text", "text", "int4", "vector"])
        for passage, counts, vector in zip(passages, terms, vectors, strict=True):
            length = sum(counts.values())
            copy.write_row((
                numbers[_text(passage.article_id)], passage.ordinal, _text(passage.id),
                _text(passage.text), length, vector,
            ))  # fmt: skip
    ids = [_text(p.id) for p in passages]
    rows = dict(
        connection.execute(
            "SELECT id, number FROM newsqa_passages WHERE id = ANY(%s)", (ids,)
        ).fetchall()
    )
    added = sum(sum(counts.values()) for counts in terms)
    average = (kept[1] + added) / max(kept[0] + len(passages), 1)
    postings = [(int(rows[i]), c) for i, c in zip(ids, terms, strict=True)]
    bm25.add(connection, postings, average, fresh=fresh)
    return added


def _record_build(
    connection: Connection,
    model: str,
    vectors: Vectors,
    tokenizer: Tokenizer,
    change: tuple[int, int],
) -> None:
    """Write the build's row of newsqa_meta: the passage count and total BM25 length move by
    what the build changed (`change`), so no build counts the whole table; the least mean
    length yet, which the terms' BM25 bounds were weighed by, follows the new mean down."""
    values: dict[str, Any] = {
        "model": model, "tokenizer": json.dumps(asdict(tokenizer)),
        "now": dt.datetime.now(dt.UTC), "passages": change[0], "length": change[1],
    }  # fmt: skip
    updated = connection.execute(
        """UPDATE newsqa_meta SET generation = generation + 1, built_at = %(now)s,
               passages = passages + %(passages)s, total_length = total_length + %(length)s,
               least_average = least(least_average, (total_length + %(length)s)::float8
                                                    / nullif(passages + %(passages)s, 0))""",
        values,
    )
    if updated.rowcount == 0:
        connection.execute(
            """INSERT INTO newsqa_meta
                   (model, dimension, tokenizer, generation, built_at, passages, total_length,
                    least_average)
               VALUES (%(model)s, %(dimension)s, %(tokenizer)s, 1, %(now)s, %(passages)s,
                       %(length)s,
                       coalesce(%(length)s::float8 / nullif(%(passages)s, 0), 'Infinity'))""",
            {**values, "dimension": int(vectors.shape[1])},
        )
