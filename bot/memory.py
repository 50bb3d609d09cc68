"""Small in-memory stores with bounds: answers behind inline buttons, and per-user rate limits.

Telegram's `callback_data` holds only 64 bytes, so a button carries a short key and the state it
stands for (the ranked passages of one question) lives here, bounded in size and age.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

Clock = Callable[[], float]


class ExpiringStore(Generic[T]):
    """At most `capacity` values, each forgotten `ttl` seconds after it was stored."""

    def __init__(self, capacity: int = 1000, ttl: float = 3600.0, clock: Clock = time.monotonic):
        self._items: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._capacity = capacity
        self._ttl = ttl
        self._clock = clock

    def put(self, value: T) -> str:
        """Store `value` and return the short key that finds it again."""
        key = secrets.token_urlsafe(6)
        self._items[key] = (self._clock() + self._ttl, value)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)
        return key

    def get(self, key: str) -> T | None:
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

    def __init__(self, limit: int, window: float = 60.0, clock: Clock = time.monotonic):
        self._limit = limit
        self._window = window
        self._clock = clock
        self._asked: dict[int, deque[float]] = {}

    def retry_after(self, user_id: int) -> float:
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
