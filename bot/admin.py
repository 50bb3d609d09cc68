"""Admins adding articles from the chat: by address or as a file, searchable once indexed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.pages import PageAdder
from bot.service import QAService
from embeddings.collection import Addition, article_id


@dataclass
class Admin:
    """Who may add articles, where they are stored, and the build that makes them searchable."""

    admins: frozenset[int]
    adder: PageAdder
    rebuild: Callable[[], object]
    # One addition at a time, so two copies of one article sent together are stored once.
    _storing: asyncio.Lock = field(default_factory=asyncio.Lock)
    # One build at a time: a second addition waits, then its build finds little left to do.
    _building: asyncio.Lock = field(default_factory=asyncio.Lock)

    def allows(self, user_id: int | None) -> bool:
        """Whether the user with this id (None: unknown) may add articles."""
        return user_id is not None and user_id in self.admins

    async def add_url(self, url: str) -> list[Addition]:
        """Fetch and store the article at `url` (the folder is read again first: another
        process, such as `newsqa add`, may have added it)."""
        async with self._storing:
            await asyncio.to_thread(self.adder.collection.refresh)
            return [await self.adder.add_url(url)]

    async def add_document(self, name: str, data: bytes) -> list[Addition]:
        """Store the articles of an uploaded file."""
        async with self._storing:
            await asyncio.to_thread(self.adder.collection.refresh)
            return await asyncio.to_thread(self.adder.add_document, name, data)

    async def make_searchable(
        self, service: QAService, additions: list[Addition]
    ) -> list[tuple[str, int]]:
        """Rebuild the index off the event loop, switch `service` to it, and give each added
        article's title with its number of passages."""
        async with self._building:
            await asyncio.to_thread(self.rebuild)
            await asyncio.to_thread(service.reload_if_changed)
        index = service.index
        return [
            (a.article.title, len(index.article_passages(article_id(a.article))))
            for a in additions
            if a.article is not None
        ]
