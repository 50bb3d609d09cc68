"""RSS and Atom feeds: the list kept in `feeds.json`, and the watcher that polls them.

Each round fetches every feed that is due (a conditional request, so an unchanged feed costs a
304), adds the pages of entries not handled before, and rebuilds the index once if anything was
added. A feed that fails waits twice as long after each failure. A page that could not be
fetched keeps its feed's ETag and date unsaved, so the next round sees the entry again: nothing
is lost, and one log line names each fault.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import feedparser

from bot.fetching import Fetcher
from bot.pages import PageAdder
from embeddings import (
    FeedListError,
    FetchError,
    NewsqaError,
    NotAFeedError,
    NotAnArticleError,
    UnsafeAddressError,
)
from embeddings.collection import Outcome

log = logging.getLogger(__name__)

FEEDS_FILE = "feeds.json"
# Entry addresses remembered per feed: more than any feed lists at once.
_REMEMBERED = 2000
# Rounds an entry's page may fail before it is given up (a page gone for good stays gone).
MAX_TRIES = 5


@dataclass
class Feed:
    """A feed, the validators of its last full answer, and the entries already handled."""

    url: str
    etag: str | None = None
    last_modified: str | None = None
    done: list[str] = field(default_factory=list)

    def conditional_headers(self) -> dict[str, str]:
        headers = {"If-None-Match": self.etag} if self.etag else {}
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


def load_feeds(path: Path) -> list[Feed]:
    """The feeds listed in `path` (none when it does not exist)."""
    if not path.exists():
        return []
    try:
        records: Any = json.loads(path.read_text(encoding="utf-8"))["feeds"]
        return [Feed(**record) for record in records]
    except (ValueError, KeyError, TypeError) as error:
        raise FeedListError(f"The feed list {path} is damaged ({error})") from error


def save_feeds(path: Path, feeds: list[Feed]) -> None:
    """Write the list whole, then rename it into place, so a crash leaves the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    text = json.dumps({"version": 1, "feeds": [asdict(feed) for feed in feeds]}, indent=1)
    temporary.write_text(text + "\n", encoding="utf-8")
    temporary.replace(path)


@dataclass
class _Backoff:
    failures: int = 0
    next_poll: float = 0.0


@dataclass
class Watcher:
    """Polls the feeds in `feeds_file`, adds new articles and calls `rebuild` after them;
    after a round that added nothing, calls `merge` (if any: it merges the index's segments
    when there are enough of them, off the path of the next addition)."""

    feeds_file: Path
    adder: PageAdder
    rebuild: Callable[[], object]
    # Short enough that an article is answerable within a minute of appearing in its feed; a
    # poll of an unchanged feed is a conditional request answered with an empty 304.
    interval: float = 50.0
    max_backoff: float = 6 * 3600.0
    clock: Callable[[], float] = time.monotonic
    merge: Callable[[], object] | None = None
    _backoff: dict[str, _Backoff] = field(default_factory=dict)
    _stale: bool = False  # articles were added that no build has indexed yet
    # The ETag and Last-Modified of each feed's answer this round, kept once its entries are in.
    _validators: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    _tries: dict[str, int] = field(default_factory=dict)  # failed rounds per entry address

    @property
    def fetcher(self) -> Fetcher:
        return self.adder.fetcher

    async def run(self) -> None:
        """Poll every `interval` seconds until cancelled."""
        while True:
            try:
                await self.poll()
            except Exception:  # a bug in one round must not end the watching
                log.exception("Watching the feeds failed this round; trying again")
            await asyncio.sleep(self.interval)

    async def poll(self) -> int:
        """One round over the feeds that are due; how many articles it added."""
        feeds = load_feeds(self.feeds_file)
        self.adder.collection.refresh()
        now = self.clock()
        due = [f for f in feeds if self._backoff.setdefault(f.url, _Backoff()).next_poll <= now]
        added = sum(await asyncio.gather(*(self._poll_feed(feed) for feed in due)))
        if due:
            self._save_progress(due)
        self._stale = self._stale or added > 0
        if self._stale:
            await self._rebuild()
        elif self.merge is not None:
            await self._merge()
        return added

    async def _poll_feed(self, feed: Feed) -> int:
        try:
            links = await self._new_links(feed)
        except (FetchError, NotAFeedError) as error:
            self._failed(feed, error)
            return 0
        self._backoff[feed.url] = _Backoff()
        results = [await self._add(feed, link) for link in links]
        validators = self._validators.pop(feed.url, None)
        if None in results:  # without validators the next round reads the whole feed again
            feed.etag = feed.last_modified = None
        elif validators:
            feed.etag, feed.last_modified = validators
        return results.count(True)

    async def _new_links(self, feed: Feed) -> list[str]:
        """The feed's entry addresses not handled before ([] when it is unchanged)."""
        response = await self.fetcher.get(feed.url, feed.conditional_headers())
        if response.status == 304:
            log.debug("Feed %s is unchanged", feed.url)
            return []
        # Parsing a large feed takes a moment: off the event loop, which may be the bot's.
        parsed = await asyncio.to_thread(feedparser.parse, response.body)
        if not parsed.get("version"):
            raise NotAFeedError(f"{feed.url} is not an RSS or Atom feed")
        self._validators[feed.url] = (response.etag, response.last_modified)
        links = (urljoin(response.url, e["link"]) for e in parsed.entries if e.get("link"))
        return [link for link in dict.fromkeys(links) if link not in feed.done]

    async def _add(self, feed: Feed, link: str) -> bool | None:
        """Add one entry's page: True when added, False when handled without adding (present,
        duplicate, not an article), None when it should be tried again next round."""
        try:
            addition = await self.adder.add_url(link)
        except (UnsafeAddressError, NotAnArticleError) as error:
            log.warning("Skipped entry of %s: %s", feed.url, error)
            feed.done.append(link)
            return False
        except FetchError as error:
            return self._failed_entry(feed, link, error)
        log.info("%s (from %s)", addition, feed.url)
        feed.done.append(link)
        return addition.outcome is Outcome.ADDED

    def _failed_entry(self, feed: Feed, link: str, error: FetchError) -> bool | None:
        """None (try again next round), or False once the page has failed `MAX_TRIES` rounds."""
        tries = self._tries[link] = self._tries.get(link, 0) + 1
        if tries < MAX_TRIES:
            log.warning("Entry of %s not fetched, trying again next round: %s", feed.url, error)
            return None
        log.warning("Gave up on an entry of %s after %d tries: %s", feed.url, tries, error)
        del self._tries[link]
        feed.done.append(link)
        return False

    def _failed(self, feed: Feed, error: NewsqaError) -> None:
        backoff = self._backoff[feed.url]
        backoff.failures += 1
        delay = min(self.interval * 2**backoff.failures, self.max_backoff)
        backoff.next_poll = self.clock() + delay
        log.warning("Feed %s: %s; next try in %.0f s", feed.url, error, delay)

    def _save_progress(self, polled: list[Feed]) -> None:
        """Merge what this round learnt into the list as it is now (it may have been edited)."""
        learnt = {feed.url: feed for feed in polled}
        current = load_feeds(self.feeds_file)
        for feed in current:
            if feed.url in learnt:
                fresh = learnt[feed.url]
                feed.etag, feed.last_modified = fresh.etag, fresh.last_modified
                feed.done = fresh.done[-_REMEMBERED:]
        save_feeds(self.feeds_file, current)

    async def _merge(self) -> None:
        """Merge the index in a worker thread while the feeds are quiet."""
        assert self.merge is not None
        try:
            await asyncio.to_thread(self.merge)
        except NewsqaError as error:
            log.error("The index's segments were not merged: %s", error)

    async def _rebuild(self) -> None:
        try:
            await asyncio.to_thread(self.rebuild)
            self._stale = False
        except NewsqaError as error:
            log.error("The new articles are stored but not indexed yet: %s", error)
