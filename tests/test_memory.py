"""The bounded stores: answer pages that expire, and the per-user rate limit."""

from __future__ import annotations

from bot.memory import ExpiringStore, RateLimiter


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_stored_value_is_found_until_it_expires() -> None:
    """A value is returned by its key until `ttl` seconds have passed."""
    clock = Clock()
    store: ExpiringStore[str] = ExpiringStore(capacity=10, ttl=60, clock=clock)
    key = await store.put("answer")
    assert len(key.encode()) <= 20
    clock.now += 59
    assert await store.get(key) == "answer"
    clock.now += 2
    assert await store.get(key) is None


async def test_store_forgets_the_oldest_beyond_capacity() -> None:
    """The store never holds more than its capacity; the oldest go first."""
    store: ExpiringStore[int] = ExpiringStore(capacity=3, ttl=60)
    keys = [await store.put(i) for i in range(5)]
    assert len(store) == 3
    assert [await store.get(k) for k in keys] == [None, None, 2, 3, 4]


async def test_rate_limit_allows_the_limit_then_says_how_long_to_wait() -> None:
    """The n+1st question in the window is refused with the seconds until one frees up."""
    clock = Clock()
    limiter = RateLimiter(limit=2, window=60, clock=clock)
    assert await limiter.retry_after(1) == 0
    clock.now += 10
    assert await limiter.retry_after(1) == 0
    assert await limiter.retry_after(1) == 50
    assert await limiter.retry_after(2) == 0  # other users are not affected
    clock.now += 50
    assert await limiter.retry_after(1) == 0


async def test_zero_limit_means_unlimited() -> None:
    """A limit of 0 turns rate limiting off."""
    limiter = RateLimiter(limit=0)
    assert [await limiter.retry_after(1) for _ in range(100)] == [0] * 100
