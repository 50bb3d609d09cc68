"""What the handlers remember between updates: answers behind inline buttons, and per-user
rate limits. Here both live in this process, bounded; `bot.shared_memory` keeps them in the
database instead, so that several replicas of the bot share them.

Telegram's `callback_data` holds only 64 bytes, so a button carries a short key and the state it
stands for (the ranked passages of one question) is kept under that key, bounded in size and age.
The methods are coroutines so that either kind serves the handlers.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

# The rate limit unless told otherwise (--rate-limit): questions per user per window of seconds.
QUESTIONS_PER_WINDOW = 10
RATE_WINDOW = 60.0

T = TypeVar("T")

Clock = Callable[[], float]


class Keeper(Protocol[T]):
    """Values kept for a while under short keys."""

    async def put(self, value: T) -> str:
        """Keep `value` and return the short key that finds it again."""
        ...

    async def get(self, key: str) -> T | None:
        """The value kept under `key`, or None once it has expired."""
        ...


class Limiter(Protocol):
    """A budget of questions per user."""

    async def retry_after(self, user_id: int) -> float:
        """0 and the question counts if the user may ask now; else seconds until they may."""
        ...


def new_key() -> str:
    """A short random key (8 characters) for a button's `callback_data`."""
    return secrets.token_urlsafe(6)


class ExpiringStore(Generic[T]):
    """At most `capacity` values, each forgotten `ttl` seconds after it was stored."""

    def __init__(self, capacity: int = 1000, ttl: float = 3600.0, clock: Clock = time.monotonic):
        self._items: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._capacity = capacity
        self._ttl = ttl
        self._clock = clock

    async def put(self, value: T) -> str:
        """Store `value` and return the short key that finds it again."""
        key = new_key()
        self._items[key] = (self._clock() + self._ttl, value)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)
        return key

    async def get(self, key: str) -> T | None:
        """The value stored under `key`, or None once it has expired or been evicted."""
        item = self._items.get(key)
        if item is None or item[0] < self._clock():
            self._items.pop(key, None)
            return None
        return item[1]

    def __len__(self) -> int:
        return len(self._items)


class RateLimiter:
    """Allow each user `limit` questions per `window` seconds (a sliding window)."""

    def __init__(self, limit: int, window: float = RATE_WINDOW, clock: Clock = time.monotonic):
        self._limit = limit
        self._window = window
        self._clock = clock
        self._asked: dict[int, deque[float]] = {}

    async def retry_after(self, user_id: int) -> float:
        """0 and the question counts if the user may ask now; else seconds until they may."""
        if self._limit <= 0:
            return 0.0
        now = self._clock()
        asked = self._asked.setdefault(user_id, deque())
        while asked and asked[0] <= now - self._window:
            asked.popleft()
        if len(asked) >= self._limit:
            return asked[0] + self._window - now
        asked.append(now)
        return 0.0
