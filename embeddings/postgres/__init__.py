"""The index in PostgreSQL with pgvector: a second store behind the same search.

`schema` owns the tables and their version, `bm25` the keyword statistics and their scoring
in SQL, `build` the incremental build (one transaction), `store` the reading side. This module
connects, and turns the driver's failures into the library's errors. Needs the `postgres`
extra (psycopg, pgvector); nothing else in the library imports it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from embeddings.errors import DatabaseUnavailableError
from embeddings.stores import redact_url

# Seconds to wait for the server before saying it is down.
CONNECT_TIMEOUT = 5


def describe(url: str) -> str:
    """The database's URL without its password, for messages."""
    return redact_url(url)


def connect(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    """A connection (not autocommit: each block of work is one transaction)."""
    with unavailable(url):
        return psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT)


@contextmanager
def unavailable(url: str) -> Iterator[None]:
    """Report a server that is down or refuses us as `DatabaseUnavailableError`."""
    try:
        yield
    except psycopg.OperationalError as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        message = f"Cannot use the database at {describe(url)} ({reason})"
        raise DatabaseUnavailableError(message) from error
