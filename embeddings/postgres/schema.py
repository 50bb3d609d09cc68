"""The tables of the index in PostgreSQL, and the version of their layout.

Every table is prefixed ``newsqa_`` so the index can share a database::

    newsqa_schema_version   one row: the layout version below
    newsqa_meta             one row: model, dimension, tokenizer, build number and time, the
                            passage count and total length BM25 needs, and the least mean
                            length the terms' bounds were weighed by
    newsqa_articles         one row per article: id, content hash, title, date, source, url, and
                            the L2-normalised mean of its passage vectors
    newsqa_passages         one row per passage: its article, ordinal, id, text, BM25 length and
                            vector (HNSW index of the vectors in half precision, inner
                            product: the vectors are normalised)
    newsqa_terms            one row per BM25 term: how many passages hold it, and the most its
                            term-frequency part has been in one (see `bm25`)
    newsqa_postings         one row per (term, passage): the term's count in the passage and the
                            passage's length (both also in the key's index, so a question reads
                            the index alone)

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
from embeddings.index.index import BM25_B, BM25_K1
from embeddings.postgres import describe

# The HNSW graph's links per node and its build-time candidate list, written out so every
# server builds it the same. Twice pgvector's defaults and more: at 1,000,000 synthetic
# passages (benchmarks/store.py, fitted vectors) recall@100 at ef_search 1000 was 0.85 with
# 16 and 128, 0.91 with 32 and 256, at twice the build time.
HNSW_M, HNSW_EF_CONSTRUCTION = 32, 256


def vector_index(dimension: str) -> str:
    """The statement making the HNSW index of the passage vectors (`dimension`: their length,
    as SQL text). It indexes them in half precision: the graph takes half the memory and
    disk and is read faster, while the distances returned are the full vectors'."""
    return f"""CREATE INDEX newsqa_passages_vector ON newsqa_passages
               USING hnsw ((vector::halfvec({dimension})) halfvec_ip_ops)
               WITH (m = {HNSW_M:d}, ef_construction = {HNSW_EF_CONSTRUCTION:d})"""


SCHEMA_VERSION = 3
# Statements that bring a layout of version v to v + 1; a build runs them in its transaction.
# An older layout without a way up is rebuilt from the articles instead.
UPGRADES: dict[int, Sequence[str]] = {
    1: [
        "ALTER TABLE newsqa_postings ADD COLUMN impact real",
        f"""UPDATE newsqa_postings SET impact = tf / (tf + {BM25_K1!r} * (1 - {BM25_B!r}
               + {BM25_B!r} * length / (SELECT total_length::float8 / greatest(passages, 1)
                                       FROM newsqa_meta)))""",
        "ALTER TABLE newsqa_postings ALTER COLUMN impact SET NOT NULL",
        "CREATE INDEX newsqa_postings_impact ON newsqa_postings (term, impact DESC, passage)",
    ],
    2: [
        "ALTER TABLE newsqa_meta ADD COLUMN least_average float8",
        """UPDATE newsqa_meta SET least_average =
               coalesce(total_length::float8 / nullif(passages, 0), 'Infinity')""",
        "ALTER TABLE newsqa_meta ALTER COLUMN least_average SET NOT NULL",
        "ALTER TABLE newsqa_terms ADD COLUMN bound float8 NOT NULL DEFAULT 0",
        f"""UPDATE newsqa_terms AS t SET bound = b.bound
            FROM (SELECT term, max(tf / (tf + {BM25_K1!r}::float8 * (1 - {BM25_B!r}::float8
                      + {BM25_B!r}::float8 * length / (SELECT least_average FROM newsqa_meta))))
                      AS bound
                  FROM newsqa_postings GROUP BY term) AS b
            WHERE t.id = b.term""",
        "ALTER TABLE newsqa_terms ALTER COLUMN bound DROP DEFAULT",
        "DROP INDEX newsqa_postings_impact",
        "ALTER TABLE newsqa_postings DROP COLUMN impact",
        "ALTER TABLE newsqa_postings DROP CONSTRAINT newsqa_postings_pkey",
        "ALTER TABLE newsqa_postings ADD PRIMARY KEY (term, passage) INCLUDE (tf, length)",
        "DROP INDEX newsqa_passages_vector",
        # The dimension is in newsqa_meta: the server formats it into the statement.
        "DO $$ BEGIN EXECUTE format('{}', (SELECT dimension FROM newsqa_meta)); END $$".format(
            vector_index("%s").replace("'", "''")
        ),
    ],
}

TABLES = (
    "newsqa_postings", "newsqa_terms", "newsqa_passages", "newsqa_articles", "newsqa_meta",
    "newsqa_schema_version",
)  # fmt: skip

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
            total_length bigint NOT NULL,
            least_average float8 NOT NULL)""",
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
            df integer NOT NULL,
            bound float8 NOT NULL)""",
        # The passage's length is repeated here so scoring a term reads its postings only.
        # No foreign keys: checking them row by row took most of a build's time; the build
        # deletes a passage's postings itself (`bm25.remove`).
        """CREATE TABLE newsqa_postings (
            term integer NOT NULL,
            passage bigint NOT NULL,
            tf integer NOT NULL,
            length integer NOT NULL)""",
    ]


# The postings' indexes: made after a first build's rows are in (faster than row by row).
_POSTING_INDEXES = (
    # The counts ride along in the key's index, so scoring a term reads that index alone.
    "ALTER TABLE newsqa_postings ADD PRIMARY KEY (term, passage) INCLUDE (tf, length)",
    "CREATE INDEX ON newsqa_postings (passage)",
)
# Workers for building those indexes, and memory per passage for the HNSW graph (its vector in
# half precision and its links; the graph built in memory is made several times faster than
# one spilled to disk), between a floor and a ceiling; for the build's transaction only.
MAINTENANCE_WORKERS = 2
GRAPH_BYTES_PER_PASSAGE, MAINTENANCE_MEMORY = 3000, (256 << 20, 8 << 30)


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
    if version is not None and version in UPGRADES:
        room_for_indexes(connection, _passage_count(connection))
    while version is not None and version in UPGRADES:
        for statement in UPGRADES[version]:
            connection.execute(statement.encode())
        version += 1
        connection.execute("UPDATE newsqa_schema_version SET version = %s", (version,))
    if version is not None and version > SCHEMA_VERSION:
        _refuse_other(version, url)
    return version == SCHEMA_VERSION


def _passage_count(connection: Connection) -> int:
    row = connection.execute("SELECT passages FROM newsqa_meta").fetchone()
    return int(row[0]) if row else 0


def create(connection: Connection, dimension: int) -> None:
    """Drop any tables of an earlier index and create the layout afresh (without the indexes
    of the postings and vectors: see `index_after_load`)."""
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


def index_after_load(connection: Connection, dimension: int, passages: int) -> None:
    """Create the postings' indexes and the HNSW index of the passage vectors. A first build
    calls it once the rows are in: built over them in one go, with room in memory and two
    workers, they are made several times faster than row by row."""
    room_for_indexes(connection, passages)
    for statement in _POSTING_INDEXES:
        connection.execute(statement.encode())
    connection.execute(vector_index(str(int(dimension))).encode())


def room_for_indexes(connection: Connection, passages: int) -> None:
    """Memory and workers to build indexes over `passages` rows, for this transaction."""
    low, high = MAINTENANCE_MEMORY
    memory = min(max(GRAPH_BYTES_PER_PASSAGE * passages, low), high)
    for name, value in (
        ("maintenance_work_mem", f"{memory // 1024}kB"),
        ("max_parallel_maintenance_workers", str(MAINTENANCE_WORKERS)),
    ):
        connection.execute("SELECT set_config(%s, %s, true)", (name, value))


def drop(connection: Connection) -> None:
    """Drop every table of the index."""
    for table in TABLES:
        connection.execute(f"DROP TABLE IF EXISTS {table} CASCADE".encode())
