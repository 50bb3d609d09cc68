"""Adding web pages (or saved HTML files) to the articles folder: fetch, extract, store."""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.fetching import Fetcher
from embeddings import (
    JSONL_SUFFIX,
    TEXT_SUFFIXES,
    Article,
    NotAnArticleError,
    read_articles,
)
from embeddings.collection import Addition, Collection
from embeddings.webpages import WebArticle, canonical_url, extract_article

Clock = Callable[[], dt.datetime]
_HTML_TYPES = ("text/html", "application/xhtml+xml")
HTML_SUFFIXES = frozenset({".html", ".htm"})
DOCUMENT_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | {JSONL_SUFFIX}


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class PageAdder:
    """Turns addresses into articles of the collection, each checked before and after."""

    collection: Collection
    fetcher: Fetcher
    clock: Clock = utc_now

    async def add_url(self, url: str) -> Addition:
        """Fetch and add the article at `url` (not fetched when its address is present)."""
        if self.collection.knows(url):
            return Addition.present(url)
        response = await self.fetcher.get(url)
        media_type = response.content_type.split(";")[0].strip().lower()
        if media_type and media_type not in _HTML_TYPES:
            raise NotAnArticleError(f"{url} is {media_type}, not an HTML page")
        charset = _charset(response.content_type)
        # Without a charset in the header, trafilatura reads the page's own <meta charset>.
        html = response.body.decode(charset, errors="replace") if charset else response.body
        # Extraction takes a CPU for a moment: off the event loop, which may be the bot's.
        article = await asyncio.to_thread(extract_article, html, response.url, self.clock())
        return self.collection.add(article)

    def add_file(self, path: Path) -> Addition:
        """Add the article in a saved HTML page; its date falls back to the time it is added."""
        try:
            html = path.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            raise NotAnArticleError(f"{path} cannot be read ({error.strerror})") from error
        return self.collection.add(extract_article(html, None, self.clock()))

    def add_document(self, name: str, data: bytes) -> list[Addition]:
        """Add the articles of an uploaded file: a saved HTML page, or a .txt, .md or .jsonl
        file read exactly as the articles folder's files are."""
        suffix = Path(name).suffix.lower()
        if suffix not in DOCUMENT_SUFFIXES:
            raise NotAnArticleError(f"{name} is not a .txt, .md, .html or .jsonl file")
        if suffix in HTML_SUFFIXES:
            return [self.collection.add(extract_article(data, None, self.clock()))]
        added_at = self.clock()
        return [self.collection.add(_dated(a, added_at)) for a in _read_document(suffix, data)]


def _read_document(suffix: str, data: bytes) -> list[Article]:
    """The articles in a file's bytes, through the same readers as the articles folder."""
    name = f"upload{suffix}"
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / name).write_bytes(data)
        result = read_articles(Path(folder))
    if not result.articles:
        why = [f"{s.path.replace(name, 'the file')} {s.reason}" for s in result.skipped]
        raise NotAnArticleError(f"No article: {why[0] if why else 'the file is empty'}")
    return result.articles


def _dated(article: Article, added_at: dt.datetime) -> WebArticle:
    """A file's article as the collection stores it; without a date, it is dated when added."""
    date_from = "the file" if article.date else "upload time (the file gives no date)"
    return WebArticle(
        url=canonical_url(article.url) if article.url else None,
        title=article.title,
        text=article.text,
        date=article.date or added_at.date(),
        date_from=date_from,
        fetched_at=added_at,
    )


def _charset(content_type: str) -> str | None:
    """The charset a Content-Type names, if Python knows it."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"')
            try:
                "".encode(charset)
            except LookupError:
                break
            return charset
    return None
