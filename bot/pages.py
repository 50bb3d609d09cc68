"""Adding web pages (or saved HTML files) to the articles folder: fetch, extract, store."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.fetching import Fetcher
from embeddings.collection import Addition, Collection
from embeddings.errors import NotAnArticleError
from embeddings.webpages import extract_article

Clock = Callable[[], dt.datetime]
_HTML_TYPES = ("text/html", "application/xhtml+xml")


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
