"""Button state and rate limits in the database, so that every replica of the bot shares them.

With `--store`, a "More" press may reach another replica than the one that answered the
question, and a user's questions may be spread over all of them. Two small tables hold what
`bot.memory` keeps in one process::

    newsqa_buttons      one row per answer with buttons: its key, expiry and ranking (jsonb)
    newsqa_rate_limits  one row per user: the start of their window and the questions in it

Each replica creates them, unless they exist, when it starts; an index build leaves them alone.
A replica talks to the database over one asynchronous connection, made again when the server
dropped it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any, LiteralString

import psycopg
from psycopg.types.json import Jsonb

from bot.memory import RATE_WINDOW, new_key
from bot.service import Ranking
from embeddings import (
    DatabasePermissionError,
)
from embeddings.postgres import CONNECT_TIMEOUT, connect, describe, unavailable

# Any fixed number, taken while the tables are created: replicas starting together would
# otherwise race to create the same table.
TABLES_LOCK = 0x6E6577737162

_TABLES: tuple[LiteralString, ...] = (
    """CREATE TABLE IF NOT EXISTS newsqa_buttons (
        key text PRIMARY KEY,
        expires_at timestamptz NOT NULL,
        ranking jsonb NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS newsqa_buttons_expiry ON newsqa_buttons (expires_at)",
    """CREATE TABLE IF NOT EXISTS newsqa_rate_limits (
        user_id bigint PRIMARY KEY,
        window_start timestamptz NOT NULL,
        questions integer NOT NULL)""",
)

AsyncConnection = psycopg.AsyncConnection[tuple[Any, ...]]


class SharedDatabase:
    """The connection the shared tables are read through, and their creation."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: AsyncConnection | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def create(cls, url: str) -> SharedDatabase:
        """The shared tables in the database at `url`, created unless they exist: at the
        bot's start, so a database that is down or refuses them stops it there."""
        with unavailable(url), connect(url) as connection:
            try:
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (TABLES_LOCK,))
                for statement in _TABLES:
                    connection.execute(statement)
            except psycopg.errors.InsufficientPrivilege as error:
                reason = (str(error).strip().splitlines() or [""])[0]
                message = f"The database at {describe(url)} refused the bot's tables ({reason})"
                raise DatabasePermissionError(message) from error
        return cls(url)

    async def connection(self) -> AsyncConnection:
        """An open connection (autocommit: each statement is atomic on its own)."""
        async with self._lock:
            if self._connection is None or self._connection.closed:
                with unavailable(self.url):
                    self._connection = await psycopg.AsyncConnection.connect(
                        self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
                    )
            return self._connection

    async def execute(self, query: LiteralString, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """Run one statement; its first row. A connection the server dropped (a restart) is
        made again and the statement sent once more, so the restart costs no question."""
        with unavailable(self.url):
            try:
                return await self._execute(query, params)
            except psycopg.OperationalError:
                if self._connection is None or not self._connection.broken:
                    raise
                await self._connection.close()
                return await self._execute(query, params)

    async def _execute(
        self, query: LiteralString, params: dict[str, Any]
    ) -> tuple[Any, ...] | None:
        cursor = await (await self.connection()).execute(query, params)
        return await cursor.fetchone() if cursor.description else None

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


class DatabaseButtons:
    """Rankings behind inline buttons, each forgotten `ttl` seconds after it was stored."""

    def __init__(self, database: SharedDatabase, ttl: float = 3600.0) -> None:
        self._database = database
        self._ttl = dt.timedelta(seconds=ttl)
        self._tidied = time.monotonic()

    async def put(self, value: Ranking) -> str:
        """Store a ranking and return the short key that finds it again."""
        await self._tidy()
        key = new_key()
        await self._database.execute(
            """INSERT INTO newsqa_buttons (key, expires_at, ranking)
               VALUES (%(key)s, now() + %(ttl)s, %(ranking)s)""",
            {"key": key, "ttl": self._ttl, "ranking": Jsonb(value.to_json())},
        )
        return key

    async def get(self, key: str) -> Ranking | None:
        """The ranking stored under `key`, or None once it has expired."""
        row = await self._database.execute(
            "SELECT ranking FROM newsqa_buttons WHERE key = %(key)s AND expires_at > now()",
            {"key": key},
        )
        return None if row is None else Ranking.from_json(row[0])

    async def _tidy(self) -> None:
        """Delete the expired rows, at most once per `ttl` (they are never read again)."""
        if time.monotonic() - self._tidied < self._ttl.total_seconds():
            return
        self._tidied = time.monotonic()
        await self._database.execute("DELETE FROM newsqa_buttons WHERE expires_at <= now()", {})


# One statement, so that replicas counting the same user at once never both take the last
# question of a window: the row is locked while the count is checked and raised. The CTE's
# SELECT sees the row as it was before, which is what the refusal needs.
_ASK: LiteralString = """
    WITH asked AS (
        INSERT INTO newsqa_rate_limits AS r (user_id, window_start, questions)
        VALUES (%(user)s, now(), 1)
        ON CONFLICT (user_id) DO UPDATE SET
            window_start = CASE WHEN r.window_start <= now() - %(window)s
                                THEN now() ELSE r.window_start END,
            questions = CASE WHEN r.window_start <= now() - %(window)s
                             THEN 1 ELSE r.questions + 1 END
        WHERE r.window_start <= now() - %(window)s OR r.questions < %(limit)s
        RETURNING 1)
    SELECT EXISTS (SELECT FROM asked),
           (SELECT extract(epoch FROM window_start + %(window)s - now())
            FROM newsqa_rate_limits WHERE user_id = %(user)s)"""


class DatabaseRateLimiter:
    """Allow each user `limit` questions per `window` seconds, counted by every replica.

    The window opens with a user's first question and closes `window` seconds later (the
    in-process limiter's window slides instead): one row per user, checked and counted in
    one statement.
    """

    def __init__(self, database: SharedDatabase, limit: int, window: float = RATE_WINDOW) -> None:
        self._database = database
        self._limit = limit
        self._window = dt.timedelta(seconds=window)
        self._tidied = time.monotonic()

    async def retry_after(self, user_id: int) -> float:
        """0 and the question counts if the user may ask now; else seconds until they may."""
        if self._limit <= 0:
            return 0.0
        await self._tidy()
        row = await self._database.execute(
            _ASK, {"user": user_id, "window": self._window, "limit": self._limit}
        )
        assert row is not None  # a SELECT without FROM returns one row
        counted, seconds = row
        return 0.0 if counted else max(float(seconds), 0.0)

    async def _tidy(self) -> None:
        """Delete the rows of closed windows, at most once per window (a user's next question
        starts a new one anyway)."""
        if time.monotonic() - self._tidied < self._window.total_seconds():
            return
        self._tidied = time.monotonic()
        await self._database.execute(
            "DELETE FROM newsqa_rate_limits WHERE window_start <= now() - %(window)s",
            {"window": self._window},
        )
