"""Fetching and watching feeds against a news site on 127.0.0.1: conditional requests, back-off,
dedup, every fault logged in one line without stopping the watcher, and refused addresses."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot import fetching
from bot.feeds import FEEDS_FILE, MAX_TRIES, Feed, Watcher, load_feeds, save_feeds
from bot.fetching import Fetcher, FetchPolicy, check_address
from bot.pages import PageAdder
from embeddings import collection
from embeddings.articles import read_articles
from embeddings.collection import ADDED_FILE, Collection
from embeddings.errors import FetchError, NotAnArticleError, UnsafeAddressError
from tests.news_site import ARTICLES, NewsSite, Route, SiteArticle

INTERVAL = 60.0


@pytest.fixture
async def fetcher() -> AsyncIterator[Fetcher]:
    client = Fetcher(FetchPolicy(allow_private=True, timeout=1.0, max_bytes=200_000))
    yield client
    await client.aclose()


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rebuilds:
    count: int = 0
    seen: list[int] = field(default_factory=list)

    def __call__(self) -> None:
        self.count += 1


def _watcher(data: Path, fetcher: Fetcher, *feeds: str, clock: Clock | None = None) -> Watcher:
    save_feeds(data / FEEDS_FILE, [Feed(url) for url in feeds])
    adder = PageAdder(Collection(data), fetcher)
    return Watcher(data / FEEDS_FILE, adder, Rebuilds(), interval=INTERVAL, clock=clock or Clock())


def _stored(data: Path) -> list[str]:
    return [a.title for a in read_articles(data).articles]


# --- fetching ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/feed",
        "http://localhost:8080/",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://172.16.5.4/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://224.0.0.1/",
        "http://0.0.0.0/",
        "http://240.0.0.1/",
    ],
)
async def test_non_public_addresses_are_refused(url: str) -> None:
    """Loopback, private, link-local, multicast, reserved and unspecified addresses (also as
    an IPv4-mapped IPv6 address, or a name resolving to one) are not fetched."""
    with pytest.raises(UnsafeAddressError, match="not public"):
        await check_address(url, allow_private=False)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://a/"])
async def test_only_http_and_https_are_fetched(url: str) -> None:
    """Other schemes are refused even with private addresses allowed."""
    with pytest.raises(UnsafeAddressError, match="not an http"):
        await check_address(url, allow_private=True)


async def test_the_local_site_is_refused_without_allow_private(site: NewsSite) -> None:
    """Without --allow-private-fetch nothing reaches the server."""
    fetcher = Fetcher(FetchPolicy(allow_private=False))
    with pytest.raises(UnsafeAddressError):
        await fetcher.get(site.url("/articles/harbour-bridge.html"))
    await fetcher.aclose()
    assert site.requests == []


async def test_a_redirect_to_a_refused_address_is_not_followed(site: NewsSite) -> None:
    """Each hop of a redirect is checked: a public page cannot send the fetch inside."""
    site.routes["/go"] = Route(status=302, location="file:///etc/passwd")
    fetcher = Fetcher(FetchPolicy(allow_private=True))
    with pytest.raises(UnsafeAddressError):
        await fetcher.get(site.url("/go"))
    await fetcher.aclose()


async def test_the_connection_goes_to_the_address_that_was_checked(
    site: NewsSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name is resolved once, checked, and the request sent to that address with the name
    only in the Host header: a second DNS answer cannot point the fetch elsewhere."""
    loop, port = asyncio.get_running_loop(), site.server.server_address[1]
    original, lookups = loop.getaddrinfo, []

    async def resolve(host: str, *args: Any, **kwargs: Any) -> Any:
        if host != "news.test":
            return await original(host, *args, **kwargs)
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]

    monkeypatch.setattr(loop, "getaddrinfo", resolve)
    monkeypatch.setattr(fetching, "_public", lambda address: True)  # as if 127.0.0.1 were public
    client = Fetcher()
    response = await client.get(f"http://news.test:{port}/articles/harbour-bridge.html")
    await client.aclose()
    assert response.status == 200 and lookups == ["news.test"]
    assert site.requests[-1].headers["Host"] == f"news.test:{port}"


FAULTS = [
    # (route, policy's complaint)
    (Route(b"gone", 404, "text/plain"), "answered HTTP 404"),
    (Route(b"oops", 500, "text/plain"), "answered HTTP 500"),
    (Route(b"<rss/>", delay=3.0), "did not answer within 1 s"),
    (Route(status=302, location="/fault"), "redirects in a loop"),
    (Route(b"x" * 300_000, content_type="application/rss+xml"), "larger than 200,000 bytes"),
]


@pytest.mark.parametrize(("route", "message"), FAULTS, ids=["404", "500", "slow", "loop", "huge"])
async def test_a_bad_answer_is_a_fetch_error_naming_it(
    site: NewsSite, fetcher: Fetcher, route: Route, message: str
) -> None:
    """Each way a server fails is one `FetchError` sentence."""
    site.routes["/fault"] = route
    with pytest.raises(FetchError, match=message):
        await fetcher.get(site.url("/fault"))


# --- adding pages ------------------------------------------------------------------------------


async def test_a_page_that_is_not_html_is_refused(
    site: NewsSite, fetcher: Fetcher, tmp_path: Path
) -> None:
    """An image (or a PDF) at an article's address is not read as an article."""
    site.routes["/photo.png"] = Route(b"\x89PNG....", content_type="image/png")
    with pytest.raises(NotAnArticleError, match="image/png, not an HTML page"):
        await PageAdder(Collection(tmp_path), fetcher).add_url(site.url("/photo.png"))


@pytest.mark.parametrize(
    "content_type", ["text/html", "text/html; charset=iso-8859-1"], ids=["meta", "header"]
)
async def test_a_page_in_another_charset_is_read_by_its_declaration(
    site: NewsSite, fetcher: Fetcher, tmp_path: Path, content_type: str
) -> None:
    """A Latin-1 page is decoded by its Content-Type, else by its own <meta charset>."""
    cafe = SiteArticle("cafe", "Café Müller reopens", "2024-03-01", ARTICLES[1].paragraphs)
    url = site.page(cafe)
    page = site.routes["/articles/cafe.html"].body.decode().replace("utf-8", "iso-8859-1")
    site.routes["/articles/cafe.html"] = Route(page.encode("latin-1"), content_type=content_type)
    await PageAdder(Collection(tmp_path), fetcher).add_url(url)
    assert _stored(tmp_path) == ["Café Müller reopens"]


async def test_a_present_address_is_not_fetched_again(
    site: NewsSite, fetcher: Fetcher, tmp_path: Path
) -> None:
    """The second add of an address answers "already present" without a request."""
    adder = PageAdder(Collection(tmp_path), fetcher)
    url = site.url("/articles/harbour-bridge.html")
    first, second = await adder.add_url(url), await adder.add_url(url + "#comments")
    assert str(first).startswith("Added") and str(second) == f"Already present: {url}#comments"
    assert len(site.hits("/articles/harbour-bridge.html")) == 1


# --- watching ----------------------------------------------------------------------------------


@pytest.mark.parametrize("feed", ["/rss.xml", "/atom.xml"])
async def test_watch_adds_entries_then_asks_with_if_none_match(
    site: NewsSite, fetcher: Fetcher, tmp_path: Path, feed: str
) -> None:
    """A first poll adds every entry's article and rebuilds once; the next poll sends the ETag,
    gets a 304 and fetches no page."""
    site.publish(*ARTICLES[:2])
    watcher = _watcher(tmp_path, fetcher, site.url(feed))
    assert await watcher.poll() == 2
    assert sorted(_stored(tmp_path)) == sorted(a.title for a in ARTICLES[:2])
    pages = len(site.requests)
    assert await watcher.poll() == 0
    (first, second) = site.hits(feed)
    assert "If-None-Match" not in first.headers and second.headers["If-None-Match"] == '"v2"'
    assert len(site.requests) == pages + 1
    assert load_feeds(tmp_path / FEEDS_FILE)[0].etag == '"v2"'
    assert isinstance(watcher.rebuild, Rebuilds) and watcher.rebuild.count == 1


async def test_a_new_entry_is_added_at_the_next_poll(
    site: NewsSite, fetcher: Fetcher, tmp_path: Path
) -> None:
    """Only the new entry's page is fetched: handled entries are remembered."""
    site.publish(ARTICLES[0])
    watcher = _watcher(tmp_path, fetcher, site.url("/rss.xml"))
    await watcher.poll()
    site.publish(ARTICLES[2])
    assert await watcher.poll() == 1
    assert len(site.hits("/articles/harbour-bridge.html")) == 1
    assert ARTICLES[2].title in _stored(tmp_path)


async def test_a_failing_feed_backs_off_exponentially(
    site: NewsSite, fetcher: Fetcher, tmp_path: Path
) -> None:
    """After each failure a feed waits twice as long (2, 4, 8 intervals), and polls every round
    again once it answers."""
    site.routes["/rss.xml"] = Route(b"down", 503, "text/plain")
    clock = Clock()
    watcher = _watcher(tmp_path, fetcher, site.url("/rss.xml"), clock=clock)
    polled_at = []
    for _ in range(16):
        before = len(site.hits("/rss.xml"))
        await watcher.poll()
        if len(site.hits("/rss.xml")) > before:
            polled_at.append(int((clock.now - 1000) / INTERVAL))
        clock.now += INTERVAL
    assert polled_at == [0, 2, 6, 14]
    site.publish(ARTICLES[0])
    clock.now += 16 * INTERVAL
    assert await watcher.poll() == 1
    clock.now += INTERVAL
    await watcher.poll()
    assert len(site.hits("/rss.xml")) == 6


FEED_FAULTS = [
    (Route(b"gone", 404, "text/plain"), "answered HTTP 404"),
    (Route(b"oops", 500, "text/plain"), "answered HTTP 500"),
    (Route(b"<rss/>", delay=3.0), "did not answer within 1 s"),
    (Route(status=301, location="/bad.xml"), "redirects in a loop"),
    (Route(b"<html><body><p>Welcome to our site</p></body></html>"), "not an RSS or Atom feed"),
    (Route(b"\x00\x01binary junk", content_type="application/octet-stream"), "not an RSS or Atom"),
    (Route(b"<rss>" + b"<item>x</item>" * 20_000, content_type="text/xml"), "larger than"),
]


@pytest.mark.parametrize(
    ("route", "message"),
    FEED_FAULTS,
    ids=["404", "500", "slow", "redirect-loop", "html", "not-xml", "huge"],
)
async def test_a_bad_feed_is_one_log_line_and_the_others_still_deliver(
    site: NewsSite,
    fetcher: Fetcher,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    route: Route,
    message: str,
) -> None:
    """A broken feed logs one warning naming it and the fault; a good feed polled in the same
    round still delivers its article."""
    site.routes["/bad.xml"] = route
    site.publish(ARTICLES[0])
    watcher = _watcher(tmp_path, fetcher, site.url("/bad.xml"), site.url("/rss.xml"))
    with caplog.at_level(logging.INFO, logger="bot.feeds"):
        assert await watcher.poll() == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and message in warnings[0] and "/bad.xml" in warnings[0]


ENTRY_FAULTS = [
    # (what the entry's address serves, the log line's words)
    (Route(b"\x89PNG", content_type="image/png"), "not an HTML page"),
    (Route(b"<html><body><nav><a href='/'>Home</a></nav></body></html>"), "no article text"),
]


@pytest.mark.parametrize(("route", "message"), ENTRY_FAULTS, ids=["not-html", "empty"])
async def test_an_entry_that_is_no_article_is_skipped_once(
    site: NewsSite,
    fetcher: Fetcher,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    route: Route,
    message: str,
) -> None:
    """A page that is not an article logs one line, the other entries are added, and it is
    not fetched again."""
    broken = SiteArticle("broken", "Broken", "2024-01-01", ())
    site.publish(ARTICLES[0], broken)
    site.routes["/articles/broken.html"] = route
    watcher = _watcher(tmp_path, fetcher, site.url("/rss.xml"))
    with caplog.at_level(logging.INFO, logger="bot.feeds"):
        assert await watcher.poll() == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and message in warnings[0]
    site.publish(ARTICLES[1])
    await watcher.poll()
    assert len(site.hits("/articles/broken.html")) == 1


async def test_present_and_duplicate_entries_are_logged_and_not_stored(
    site: NewsSite, fetcher: Fetcher, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An entry whose page was added by hand is already present; the same text under another
    address is a duplicate naming the first; each is one log line, none a second line."""
    adder = PageAdder(Collection(tmp_path), fetcher)
    await adder.add_url(site.url("/articles/harbour-bridge.html"))
    copy = SiteArticle("copy-of-bridge", ARTICLES[0].title, "2024-05-15", ARTICLES[0].paragraphs)
    site.publish(ARTICLES[0], copy)
    watcher = _watcher(tmp_path, fetcher, site.url("/rss.xml"))
    with caplog.at_level(logging.INFO, logger="bot.feeds"):
        assert await watcher.poll() == 0
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("Already present") for line in lines)
    assert any(line.startswith("Duplicate") and "harbour-bridge" in line for line in lines)
    assert len((tmp_path / ADDED_FILE).read_text().splitlines()) == 1


async def test_a_page_that_fails_is_fetched_again_next_round(
    site: NewsSite, fetcher: Fetcher, tmp_path: Path
) -> None:
    """An entry whose page answered 500 is not lost: the feed's ETag is not kept, so the next
    round reads the feed whole and adds the page once it answers."""
    site.publish(ARTICLES[1])
    good = site.routes["/articles/orchard-frost.html"]
    site.routes["/articles/orchard-frost.html"] = Route(b"busy", 500, "text/plain")
    watcher = _watcher(tmp_path, fetcher, site.url("/rss.xml"))
    assert await watcher.poll() == 0
    site.routes["/articles/orchard-frost.html"] = good
    assert await watcher.poll() == 1
    assert "If-None-Match" not in site.hits("/rss.xml")[1].headers
    assert _stored(tmp_path) == [ARTICLES[1].title]


async def test_a_page_gone_for_good_is_given_up_after_some_rounds(
    site: NewsSite, fetcher: Fetcher, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An entry whose page keeps failing is tried `MAX_TRIES` rounds, then given up with one
    line saying so, and the feed's ETag is kept again."""
    site.publish(ARTICLES[1])
    site.routes["/articles/orchard-frost.html"] = Route(b"gone", 404, "text/plain")
    watcher = _watcher(tmp_path, fetcher, site.url("/rss.xml"))
    with caplog.at_level(logging.INFO, logger="bot.feeds"):
        for _ in range(MAX_TRIES + 2):
            await watcher.poll()
    assert len(site.hits("/articles/orchard-frost.html")) == MAX_TRIES
    assert sum("Gave up" in r.getMessage() for r in caplog.records) == 1
    assert "If-None-Match" in site.hits("/rss.xml")[-1].headers


async def test_an_article_added_by_another_process_is_present_for_the_watcher(
    site: NewsSite, fetcher: Fetcher, tmp_path: Path
) -> None:
    """`newsqa add` while `watch` runs: the watcher sees the folder changed and does not fetch
    or store that article again."""
    watcher = _watcher(tmp_path, fetcher, site.url("/rss.xml"))
    other = PageAdder(Collection(tmp_path), fetcher)
    await other.add_url(site.url("/articles/orchard-frost.html"))
    site.publish(ARTICLES[1])
    assert await watcher.poll() == 0
    assert len(site.hits("/articles/orchard-frost.html")) == 1
    assert len((tmp_path / ADDED_FILE).read_text().splitlines()) == 1


async def test_the_watcher_reads_the_folder_again_only_when_articles_change(
    site: NewsSite, fetcher: Fetcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rounds that change only feeds.json, or only add the watcher's own lines, read no
    article file again: a large archive is not reread every few minutes."""
    site.publish(ARTICLES[0])
    watcher = _watcher(tmp_path, fetcher, site.url("/rss.xml"))
    reads = []
    monkeypatch.setattr(collection, "read_articles", lambda folder: reads.append(folder))
    for _ in range(3):
        await watcher.poll()
    assert reads == []
