"""Web pages as articles: the article's title, date and text, without the site around it.

Extraction is trafilatura's (it drops navigation, related links, cookie banners, comments and
share buttons); this module decides the date, the canonical address and the text's fingerprint
that tells the same article apart under another address.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import trafilatura
from trafilatura.settings import Document

from embeddings.errors import NotAnArticleError

# Query parameters that track a click rather than name a page.
_TRACKING = frozenset({"fbclid", "gclid", "mc_cid", "mc_eid", "cmpid"})
# Fewer words than this is a stub, an error page or bare navigation, not an article.
MIN_WORDS = 20
# htmldate rejects dates after its `max_date` (today by default): taking every date lets a
# future one be noticed and clamped instead of silently replaced by another date on the page.
_DATE_PARAMS = {"original_date": True, "extensive_search": False, "max_date": "9999-12-31"}


@dataclass(frozen=True)
class WebArticle:
    """An article extracted from a page: `date_from` says where its date came from."""

    url: str | None
    title: str
    text: str
    date: dt.date
    date_from: str
    fetched_at: dt.datetime

    @property
    def fingerprint(self) -> str:
        """The same text under any address, whatever its spacing or case, has one fingerprint."""
        return text_fingerprint(self.text)


def text_fingerprint(text: str) -> str:
    return hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()


def extract_article(html: str | bytes, url: str | None, fetched_at: dt.datetime) -> WebArticle:
    """The article in `html` (fetched from `url` at `fetched_at`, an aware time); bytes are
    decoded by the page's own charset declaration."""
    where = url or "the page"
    document = trafilatura.bare_extraction(
        html,
        url=url,
        with_metadata=True,
        include_comments=False,
        include_tables=False,
        date_extraction_params=_DATE_PARAMS,
    )
    if not isinstance(document, Document) or len((document.text or "").split()) < MIN_WORDS:
        raise NotAnArticleError(f"{where} holds no article text once extracted")
    title = " ".join((document.title or "").split()) or (url or "Untitled page")
    date, date_from = _article_date(document.date, fetched_at)
    return WebArticle(
        url=canonical_url(_own_address(document.url, url)) if url else None,
        title=title,
        text=_paragraphs(document.text or "", title),
        date=date,
        date_from=date_from,
        fetched_at=fetched_at,
    )


def _own_address(declared: str | None, fetched: str) -> str:
    """The page's declared canonical address when it is on the fetched host, else the fetched
    one: a page must not claim another site's article, which would then count as present."""
    if declared and urlsplit(declared).hostname == urlsplit(fetched).hostname:
        return declared
    return fetched


def _article_date(found: str | None, fetched_at: dt.datetime) -> tuple[dt.date, str]:
    """The page's date, else the fetch date; a date after the fetch is clamped to it."""
    today = fetched_at.date()
    try:
        date = dt.date.fromisoformat(found[:10]) if found else None
    except ValueError:
        date = None
    if date is None:
        return today, "fetch time (the page gives no date)"
    if date > today:
        return today, f"fetch time (the page's date {date} is in the future)"
    return date, "the page"


def _paragraphs(text: str, title: str) -> str:
    """One paragraph a line becomes paragraphs between blank lines, without a repeated title."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    if lines and lines[0] == title:
        lines = lines[1:]
    return "\n\n".join(lines)


def canonical_url(url: str) -> str:
    """`url` with its scheme and host in lower case, without default port, fragment or
    tracking parameters, so two links to one page compare equal."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    if parts.port and parts.port != default:
        host = f"{host}:{parts.port}"
    query = [(k, v) for k, v in parse_qsl(parts.query, True) if not _tracking(k)]
    return urlunsplit((parts.scheme.lower(), host, parts.path or "/", urlencode(query), ""))


def _tracking(name: str) -> bool:
    return name.startswith("utm_") or name in _TRACKING
