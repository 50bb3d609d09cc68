"""A news site on 127.0.0.1 for the tests: article pages inside realistic site chrome, RSS and
Atom feeds with ETags, and addresses that fail in each way a real site can."""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import threading
import time
from dataclasses import dataclass, field
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class SiteArticle:
    slug: str
    title: str
    date: str  # YYYY-MM-DD, or "" for a page without a date
    paragraphs: tuple[str, ...]


ARTICLES = [
    SiteArticle(
        "harbour-bridge",
        "Harbour bridge reopens after two years of repairs",
        "2024-05-14",
        (
            "The harbour bridge reopened to traffic on Tuesday morning, two years after engineers "
            "closed it when inspectors found cracks in three of its steel cables.",
            "Transport minister Alva Brennan cut a ribbon at the northern end of the span and "
            "said the repairs had cost 184 million euros, eleven million less than planned.",
            "Commuters who had spent up to forty extra minutes a day on the ring road queued "
            "from half past five to be among the first to drive across.",
            "The city will charge a toll of two euros for cars until the end of the decade to "
            "pay back the loan that financed the work, the minister confirmed.",
            "Cyclists get a separate lane on the eastern side, protected by a concrete barrier "
            "that replaces the painted line the old bridge had.",
        ),
    ),
    SiteArticle(
        "orchard-frost",
        "Late frost destroys half of the valley's apple blossom",
        "2024-04-22",
        (
            "A night of frost at the end of April destroyed about half of the apple blossom in "
            "the Lindental valley, growers' association chair Tomas Weidner said on Monday.",
            "Temperatures fell to minus four degrees shortly before dawn, colder than the "
            "sprinklers that coat blossoms in protective ice can guard against.",
            "Growers expect the harvest to fall to its lowest level since 1991 and have asked "
            "the regional government for emergency loans to pay seasonal workers.",
            "Pear and cherry trees, which flowered earlier, were largely spared.",
        ),
    ),
    SiteArticle(
        "library-robot",
        "City library lends out a robot that reads to children",
        "2024-06-02",
        (
            "The central library has started lending a small reading robot to families, who "
            "can borrow it for a week like any book on the shelves.",
            "Librarian Nkechi Obi said the robot reads picture books aloud in six languages and "
            "asks children questions about the story to keep them listening.",
            "The waiting list reached three hundred names within two days of the announcement, "
            "so the library has ordered four more robots from the manufacturer.",
            "Parents must return the robot charged, and the library wipes its memory of "
            "voices and names after every loan.",
        ),
    ),
]

# Site chrome around every article: none of it may end up in an extracted article.
BOILERPLATE = [
    "Home", "World", "Business", "Sport", "Culture", "Subscribe now",
    "We use cookies to improve your experience. Accept all cookies or manage your settings.",
    "Share on Twitter", "Share on Facebook", "Copy link",
    "Read more: Council approves the new budget for public transport in a late vote",
    "Read more: Storm warnings issued for the coast as autumn gales approach",
    "This is a disgrace, the city promised the bridge would be ready last year!",
    "Finally some good news for everyone who drives to work from the north side every day.",
    "Sign up to our morning newsletter", "© 2024 Valley Herald. All rights reserved.",
    "Advertisement",
]  # fmt: skip


def article_page(article: SiteArticle, url: str) -> str:
    """The article as a news site serves it: nav, banner, share buttons, related, comments."""
    body = "\n".join(f"<p>{html.escape(p)}</p>" for p in article.paragraphs)
    dated = (
        f'<meta property="article:published_time" content="{article.date}T08:00:00+00:00">'
        f'<time datetime="{article.date}">{article.date}</time>'
        if article.date
        else ""
    )
    nav = "".join(f'<li><a href="/{w.lower()}">{w}</a></li>' for w in BOILERPLATE[:5])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(article.title)} | Valley Herald</title>
<meta property="og:title" content="{html.escape(article.title)}">
<link rel="canonical" href="{url}">
{dated.split("<time")[0]}
</head><body>
<div class="cookie-banner" id="cookie-consent"><p>{BOILERPLATE[6]}</p><button>Accept</button></div>
<header class="site-header"><a class="logo" href="/">Valley Herald</a>
<nav class="main-nav"><ul>{nav}</ul></nav><a class="cta" href="/subscribe">{BOILERPLATE[5]}</a>
</header>
<div class="ad-slot"><span>{BOILERPLATE[16]}</span></div>
<main><article class="story">
<h1>{html.escape(article.title)}</h1>
<div class="byline">By Staff Reporter {"<time" + dated.split("<time")[1] if dated else ""}</div>
<div class="story-body">{body}</div>
</article>
<div class="share-buttons"><a href="#">{BOILERPLATE[7]}</a> <a href="#">{BOILERPLATE[8]}</a>
<a href="#">{BOILERPLATE[9]}</a></div>
<aside class="related"><h2>Related stories</h2><ul>
<li><a href="/budget">{BOILERPLATE[10]}</a></li><li><a href="/storm">{BOILERPLATE[11]}</a></li>
</ul></aside>
<section class="comments" id="comments"><h2>Comments</h2>
<div class="comment"><p class="author">citizen42</p><p>{BOILERPLATE[12]}</p></div>
<div class="comment"><p class="author">northsider</p><p>{BOILERPLATE[13]}</p></div>
</section></main>
<footer><p>{BOILERPLATE[14]}</p><p>{BOILERPLATE[15]}</p></footer>
</body></html>"""


def rss(base: str, articles: list[SiteArticle]) -> str:
    items = "".join(
        f"<item><title>{html.escape(a.title)}</title><link>{base}/articles/{a.slug}.html</link>"
        f"<guid>{base}/articles/{a.slug}.html</guid><pubDate>{_rfc822(a.date)}</pubDate></item>"
        for a in articles
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
        f"<title>Valley Herald</title><link>{base}/</link><description>News</description>"
        f"{items}</channel></rss>"
    )


def atom(base: str, articles: list[SiteArticle]) -> str:
    entries = "".join(
        f"<entry><title>{html.escape(a.title)}</title>"
        f'<link href="{base}/articles/{a.slug}.html"/><id>{base}/{a.slug}</id>'
        f"<updated>{a.date or '2024-01-01'}T08:00:00Z</updated></entry>"
        for a in articles
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>Valley Herald</title><id>{base}/</id><updated>2024-06-02T08:00:00Z</updated>"
        f"{entries}</feed>"
    )


def _rfc822(date: str) -> str:
    return format_datetime(dt.datetime.fromisoformat(f"{date or '2024-01-01'}T08:00:00+00:00"))


@dataclass
class Request:
    path: str
    headers: dict[str, str]


@dataclass
class Route:
    """What the site answers at one path."""

    body: bytes = b""
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    etag: str | None = None
    location: str | None = None
    delay: float = 0.0


@dataclass
class NewsSite:
    """The server; `routes` may be changed while it runs, `requests` lists what it was asked."""

    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    feed_articles: list[SiteArticle] = field(default_factory=list)

    def start(self) -> None:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.requests.append(Request(self.path, dict(self.headers.items())))
                site.answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        for article in ARTICLES:
            self.page(article)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def page(self, article: SiteArticle) -> str:
        """Serve `article` as a page; its address."""
        path = f"/articles/{article.slug}.html"
        self.routes[path] = Route(article_page(article, self.url(path)).encode())
        return self.url(path)

    def publish(self, *articles: SiteArticle) -> None:
        """Put `articles` (new ones first) in both feeds, with a new ETag."""
        self.feed_articles = [*articles, *self.feed_articles]
        for article in articles:
            self.page(article)
        tag = f'"v{len(self.feed_articles)}"'
        self.routes["/rss.xml"] = Route(
            rss(self.base, self.feed_articles).encode(), content_type="application/rss+xml",
            etag=tag,
        )  # fmt: skip
        self.routes["/atom.xml"] = Route(
            atom(self.base, self.feed_articles).encode(),
            content_type="application/atom+xml",
            etag=tag,
        )

    def hits(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        route = self.routes.get(handler.path, Route(b"not found", 404, "text/plain"))
        if route.delay:
            time.sleep(route.delay)  # the injected fault: a slow page
        if route.etag and handler.headers.get("If-None-Match") == route.etag:
            handler.send_response(304)
            handler.send_header("ETag", route.etag)
            handler.end_headers()
            return
        handler.send_response(route.status)
        handler.send_header("Content-Type", route.content_type)
        handler.send_header("Content-Length", str(len(route.body)))
        if route.etag:
            handler.send_header("ETag", route.etag)
        if route.location:
            handler.send_header("Location", route.location)
        handler.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
            handler.wfile.write(route.body)
