"""The tables of the index in PostgreSQL, and the version of their layout.

Every table is prefixed ``newsqa_`` so the index can share a database::

    newsqa_schema_version   one row: the layout version below
    newsqa_meta             one row: model, dimension, tokenizer, build number and time, and the
                            passage count and total length BM25 needs
    newsqa_articles         one row per article: id, content hash, title, date, source, url, and
                            the L2-normalised mean of its passage vectors
    newsqa_passages         one row per passage: its article, ordinal, id, text, BM25 length and
                            vector (HNSW index, inner product: the vectors are normalised)
    newsqa_terms            one row per BM25 term: how many passages hold it
    newsqa_postings         one row per (term, passage): the term's count in the passage

A passage's and an article's `number` are what `SearchStore` calls rows and article numbers;
they stay the same while the article is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from embeddings.errors import (
    IndexNotFoundError,
    SchemaTooNewError,
    SchemaTooOldError,
    VectorExtensionError,
)
from embeddings.postgres import describe

SCHEMA_VERSION = 1
# Statements that bring a layout of version v to v + 1 (none yet); a build runs them in its
# transaction. An older layout without a way up is rebuilt from the articles instead.
UPGRADES: dict[int, Sequence[str]] = {}

TABLES = (
    "newsqa_postings", "newsqa_terms", "newsqa_passages", "newsqa_articles", "newsqa_meta",
    "newsqa_schema_version",
)  # fmt: skip

# pgvector's HNSW defaults, written out so the index is built the same on every server.
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 64

Connection = psycopg.Connection[Any]


def _statements(dimension: int) -> list[str]:
    """The layout, for vectors of `dimension` numbers (an int: it is formatted into SQL)."""
    return [
        "CREATE TABLE newsqa_schema_version (version integer NOT NULL)",
        f"INSERT INTO newsqa_schema_version VALUES ({SCHEMA_VERSION:d})",
        """CREATE TABLE newsqa_meta (
            one boolean PRIMARY KEY DEFAULT true CHECK (one),
            model text NOT NULL,
            dimension integer NOT NULL,
            tokenizer jsonb NOT NULL,
            generation bigint NOT NULL,
            built_at timestamptz NOT NULL,
            passages bigint NOT NULL,
            total_length bigint NOT NULL)""",
        f"""CREATE TABLE newsqa_articles (
            number bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id text NOT NULL UNIQUE,
            hash text NOT NULL,
            title text NOT NULL,
            date date,
            source text NOT NULL,
            url text,
            vector vector({dimension:d}) NOT NULL)""",
        f"""CREATE TABLE newsqa_passages (
            number bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            article bigint NOT NULL REFERENCES newsqa_articles ON DELETE CASCADE,
            ordinal integer NOT NULL,
            id text NOT NULL UNIQUE,
            text text NOT NULL,
            length integer NOT NULL,
            vector vector({dimension:d}) NOT NULL)""",
        "CREATE INDEX ON newsqa_passages (article, ordinal)",
        """CREATE TABLE newsqa_terms (
            id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            term text NOT NULL UNIQUE,
            df integer NOT NULL)""",
        # The passage's length is repeated here so scoring a term reads its postings only.
        # No foreign keys: checking them row by row took most of a build's time; the build
        # deletes a passage's postings itself (`bm25.remove`).
        """CREATE TABLE newsqa_postings (
            term integer NOT NULL,
            passage bigint NOT NULL,
            tf integer NOT NULL,
            length integer NOT NULL,
            PRIMARY KEY (term, passage))""",
        "CREATE INDEX ON newsqa_postings (passage)",
    ]


def installed_version(connection: Connection) -> int | None:
    """The layout version in the database, or None when it holds no index."""
    found = connection.execute("SELECT to_regclass('newsqa_schema_version')").fetchone()
    if found is None or found[0] is None:
        return None
    row = connection.execute("SELECT max(version) FROM newsqa_schema_version").fetchone()
    return None if row is None else row[0]


def require_current(connection: Connection, url: str) -> None:
    """Insist the database holds an index in this version's layout (for readers)."""
    version = installed_version(connection)
    if version is None:
        raise IndexNotFoundError(f"No index in the database at {describe(url)}")
    _refuse_other(version, url)


def _refuse_other(version: int, url: str) -> None:
    where = describe(url)
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"The index in the database at {where} has schema version {version}, newer than "
            f"the {SCHEMA_VERSION} this newsqa reads"
        )
    if version < SCHEMA_VERSION:
        raise SchemaTooOldError(
            f"The index in the database at {where} has schema version {version}, older than "
            f"the {SCHEMA_VERSION} this newsqa reads"
        )


def upgrade(connection: Connection, url: str) -> bool:
    """Bring the layout to this version (for builds); False when there is none to upgrade,
    or an older one with no way up, which the caller rebuilds. A newer one is refused."""
    version = installed_version(connection)
    while version is not None and version in UPGRADES:
        for statement in UPGRADES[version]:
            connection.execute(statement.encode())
        version += 1
        connection.execute("UPDATE newsqa_schema_version SET version = %s", (version,))
    if version is not None and version > SCHEMA_VERSION:
        _refuse_other(version, url)
    return version == SCHEMA_VERSION


def create(connection: Connection, dimension: int) -> None:
    """Drop any tables of an earlier index and create the layout afresh (without the vectors'
    index: see `index_vectors`)."""
    drop(connection)
    for statement in _statements(int(dimension)):
        connection.execute(statement.encode())


def require_vectors(connection: Connection, url: str) -> None:
    """Create the pgvector extension unless it is there (only a superuser may: it is not
    marked trusted)."""
    try:
        with connection.transaction():  # a savepoint: a refusal leaves the build's transaction
            connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.FeatureNotSupported) as error:
        reason = (str(error).strip().splitlines() or [""])[0]
        message = f"The database at {describe(url)} has no vector extension ({reason})"
        raise VectorExtensionError(message) from error


def index_vectors(connection: Connection) -> None:
    """Create the HNSW index of the passage vectors. A first build calls it once the rows are
    in: built over them in one go it is made several times faster than row by row."""
    connection.execute(
        f"""CREATE INDEX newsqa_passages_vector ON newsqa_passages
            USING hnsw (vector vector_ip_ops)
            WITH (m = {HNSW_M:d}, ef_construction = {HNSW_EF_CONSTRUCTION:d})""".encode()
    )


def drop(connection: Connection) -> None:
    """Drop every table of the index."""
    for table in TABLES:
        connection.execute(f"DROP TABLE IF EXISTS {table} CASCADE".encode())
