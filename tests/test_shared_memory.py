"""Button state and rate limits in the database: what one replica stores, another finds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

pytest.importorskip("psycopg", reason="the database tests need the postgres extra")

import psycopg

from bot.cli import memory_for
from bot.memory import ExpiringStore, RateLimiter
from bot.service import Ranking
from bot.shared_memory import DatabaseButtons, DatabaseRateLimiter, SharedDatabase
from embeddings.errors import DatabasePermissionError, DatabaseUnavailableError
from embeddings.passages import Passage
from embeddings.search.searcher import Hit, Query
from testbed.postgres_server import PostgresServer


@pytest.fixture
async def replicas(database_url: str) -> AsyncIterator[tuple[SharedDatabase, SharedDatabase]]:
    """Two replicas' connections to one database."""
    first, second = SharedDatabase.create(database_url), SharedDatabase.create(database_url)
    yield first, second
    await first.close()
    await second.close()


def _ranking() -> Ranking:
    passage = Passage("a#0", "a", 0, "Rain <b>& floods</b>", None, "bbc", "It rained.", None)
    query = Query(np.array([0.6, 0.8], dtype=np.float32), False, "Did it rain?")
    return Ranking("Did it rain?", query, [Hit(passage, 0.5, 0.25)])


async def test_a_ranking_stored_by_one_replica_is_found_by_another(
    replicas: tuple[SharedDatabase, SharedDatabase],
) -> None:
    """The key a button carries finds the same ranking on the other replica."""
    first, second = replicas
    key = await DatabaseButtons(first).put(_ranking())
    found = await DatabaseButtons(second).get(key)
    assert found is not None
    assert (found.question, found.hits) == ("Did it rain?", _ranking().hits)
    assert np.array_equal(found.query.vector, _ranking().query.vector)
    assert len(f"p:{key}:4".encode()) <= 64  # Telegram's callback_data limit


async def test_an_expired_or_unknown_key_finds_nothing(
    replicas: tuple[SharedDatabase, SharedDatabase],
) -> None:
    """A ranking past its time to live, or a key never stored, reads as None."""
    first, _ = replicas
    key = await DatabaseButtons(first, ttl=0).put(_ranking())
    assert await DatabaseButtons(first).get(key) is None
    assert await DatabaseButtons(first).get("no-such-key") is None


async def test_the_rate_limit_holds_across_replicas(
    replicas: tuple[SharedDatabase, SharedDatabase],
) -> None:
    """Questions counted by either replica spend one budget; other users keep theirs."""
    first, second = (DatabaseRateLimiter(database, limit=2) for database in replicas)
    assert await first.retry_after(7) == 0
    assert await second.retry_after(7) == 0
    assert 59 < await first.retry_after(7) <= 60
    assert 59 < await second.retry_after(7) <= 60
    assert await second.retry_after(8) == 0


async def test_concurrent_questions_never_overspend_the_limit(
    replicas: tuple[SharedDatabase, SharedDatabase],
) -> None:
    """Twenty questions at once through two replicas: exactly the limit of them are allowed."""
    limiters = [DatabaseRateLimiter(database, limit=5) for database in replicas]
    waits = await asyncio.gather(*(limiters[i % 2].retry_after(7) for i in range(20)))
    assert sorted(waits)[:6] == [0, 0, 0, 0, 0, pytest.approx(60, abs=1)]


async def test_a_new_window_opens_when_the_last_one_has_passed(
    replicas: tuple[SharedDatabase, SharedDatabase],
) -> None:
    """Once `window` seconds have passed since it opened, the user may ask again."""
    limiter = DatabaseRateLimiter(replicas[0], limit=1, window=0.3)
    assert await limiter.retry_after(7) == 0
    assert await limiter.retry_after(7) > 0
    await asyncio.sleep(0.35)  # the window runs on the database's clock, which no test can move
    assert await limiter.retry_after(7) == 0


def test_a_replica_without_its_database_stops_at_start() -> None:
    """No server: creating the tables fails with the library's error, before any update."""
    with pytest.raises(DatabaseUnavailableError, match="Cannot use the database at"):
        SharedDatabase.create("postgresql://nobody@127.0.0.1:9/none")


def test_a_user_who_may_not_create_tables_is_told_so(database_url: str) -> None:
    """A database user without CREATE on the schema gets one sentence naming the database."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("CREATE ROLE reader LOGIN")
    reader = database_url.replace("postgres@", "reader@")
    with pytest.raises(DatabasePermissionError, match=r"^The database at .* refused the bot's"):
        SharedDatabase.create(reader)


def test_the_bot_keeps_its_memory_in_the_database_only_with_a_store(database_url: str) -> None:
    """`newsqa bot --store` shares button state and rate limits; without it they stay in-process."""
    limiter, buttons = memory_for(None, 3)
    assert isinstance(limiter, RateLimiter) and isinstance(buttons, ExpiringStore)
    limiter, buttons = memory_for(database_url, 3)
    assert isinstance(limiter, DatabaseRateLimiter) and isinstance(buttons, DatabaseButtons)


async def test_a_restarted_server_costs_no_question(postgres_server: PostgresServer) -> None:
    """After a restart the next question is counted on a new connection; while the server is
    down a question fails with the library's error; the count survives both."""
    server = PostgresServer()  # its own, so stopping it stops nothing else
    try:
        server.start()
        database = SharedDatabase.create(server.create_database())
        limiter = DatabaseRateLimiter(database, limit=2)
        assert await limiter.retry_after(7) == 0
        server.pause()
        server.resume()
        assert await limiter.retry_after(7) == 0
        server.pause()
        with pytest.raises(DatabaseUnavailableError, match="Cannot use the database at"):
            await limiter.retry_after(7)
        server.resume()
        assert await limiter.retry_after(7) > 0
        await database.close()
    finally:
        server.stop()
