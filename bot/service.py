"""The question-answering service behind the bot: the current index, searched off the event loop.

An index folder is reopened when a build has switched it (checked before every question, and
on SIGHUP), so a rebuilt index is served without restarting the bot; a database store sees each
new build by itself.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embeddings import (
    DEFAULT_THRESHOLDS,
    Answer,
    ArticleEntry,
    Encoder,
    FolderLocation,
    Hit,
    NewsqaError,
    Passage,
    Query,
    Reranker,
    Searcher,
    SearchStore,
    StoreLocation,
    Thresholds,
    cores,
    detect_language,
)

log = logging.getLogger(__name__)

# How many ranked passages a question keeps for paging with "More" (five pages of three).
RANKED = 15


@dataclass(frozen=True)
class Ranking:
    """The passages ranked for one question, kept so later pages need no new search."""

    question: str
    query: Query
    hits: list[Hit]

    @property
    def language(self) -> str:
        """The question's language, for the bot's own sentences."""
        return detect_language(self.question)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready record for another process; `from_json` reads it back.

        The reranker's readings are left out (a sentence may score -inf, which JSON cannot
        hold): a page read back has its passages read again, to the same result.
        """
        return {
            "question": self.question,
            # float32 bytes: exact, and a quarter of the size of the numbers written out
            "vector": base64.b64encode(self.query.vector.astype("<f4").tobytes()).decode(),
            "multilingual": self.query.multilingual,
            "text": self.query.text,
            "hits": [
                {"passage": hit.passage.to_json(), "score": hit.score, "cosine": hit.cosine}
                for hit in self.hits
            ],
        }

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Ranking:
        """The ranking a `to_json` record describes."""
        vector = np.frombuffer(base64.b64decode(record["vector"]), dtype="<f4").astype(np.float32)
        query = Query(vector, record["multilingual"], record["text"])
        hits = [
            Hit(Passage.from_json(hit["passage"]), hit["score"], hit["cosine"])
            for hit in record["hits"]
        ]
        return cls(record["question"], query, hits)


@dataclass(frozen=True)
class Stats:
    """What the bot knows, for /start, /help and /about."""

    articles: int
    passages: int
    first_date: dt.date | None
    last_date: dt.date | None
    model: str
    built_at: str
    examples: list[str]


class QAService:
    """Ranks passages for questions and picks their answering sentences."""

    def __init__(
        self,
        location: Path | StoreLocation,
        encoder: Encoder,
        *,
        multilingual: Encoder | None = None,
        reranker: Reranker | None = None,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
    ):
        # A path is an index folder.
        self.location = FolderLocation(location) if isinstance(location, Path) else location
        self.encoder = encoder
        self.multilingual = multilingual
        self.reranker = reranker
        self.thresholds = thresholds
        self._lock = threading.Lock()
        self._tried: str | None = None  # the last generation opened, or that failed to open
        self._searcher = self._open()
        # Questions are searched one per core, first come first served: more at once would
        # only share the cores (the reranker already spreads each question over them) and
        # make every waiting user wait longer.
        self._workers = ThreadPoolExecutor(cores(), thread_name_prefix="search")

    def _open(self) -> Searcher:
        index = self.location.open(self.encoder.name)
        return Searcher(
            index,
            self.encoder,
            self.multilingual,
            reranker=self.reranker,
            thresholds=self.thresholds,
        )

    @property
    def index(self) -> SearchStore:
        return self._searcher.index

    def reload_if_changed(self) -> bool:
        """Switch to a newer index if a build has replaced it; True when it did.

        A new index that cannot be opened (damaged, another model's) is logged once and passed
        over: the bot goes on answering from the index it has.
        """
        try:
            generation = self.location.current()
            if generation is None or generation in (self.index.generation, self._tried):
                return False
            with self._lock:
                if generation != self.index.generation:
                    self._tried = generation
                    self._searcher = self._open()
                    log.info("Switched to index %s (%d passages)", generation, len(self.index))
        except NewsqaError as error:
            log.error("Still answering from index %s: %s", self.index.generation, error)
            return False
        return True

    async def rank(self, question: str) -> Ranking:
        """The relevant passages for `question`, best first (empty when nothing is relevant)."""
        return await asyncio.get_running_loop().run_in_executor(self._workers, self._rank, question)

    def _rank(self, question: str) -> Ranking:
        self.reload_if_changed()
        searcher = self._searcher
        query = searcher.encode_question(question)
        results = searcher.search(query, RANKED)
        return Ranking(question, query, results.hits if results.answered else [])

    async def answers(self, ranking: Ranking, start: int, count: int) -> list[Answer]:
        """One page of a ranking, with each passage's answering sentence."""
        page = ranking.hits[start : start + count]
        return await asyncio.get_running_loop().run_in_executor(
            self._workers, self._searcher.answers, ranking.query, page
        )

    def article(self, passage: Passage) -> list[Passage]:
        """All passages of the passage's article in the current index (or just the passage)."""
        return self.index.article_passages(passage.article_id) or [passage]

    def stats(self) -> Stats:
        """Counts, date range, model and build time of the current index."""
        index = self.index
        first_date, last_date = index.date_range()
        return Stats(
            articles=index.article_count(),
            passages=len(index),
            first_date=first_date,
            last_date=last_date,
            model=index.model,
            built_at=index.built_at,
            examples=example_questions(index),
        )


# Runs of two to four capitalised words, e.g. "Jiang Hui" or "Propaganda Department".
_NAME = re.compile(r"\b[A-Z][\w'-]+(?:\s+(?:of\s+(?:the\s+)?)?[A-Z][\w'-]+){1,3}\b")
_LEADING = re.compile(r"^(?:The|A|An|This|These|In|On|At|With|By|For)\s+")


def example_questions(index: SearchStore, count: int = 3) -> list[str]:
    """Questions the articles can answer: about names in them (newest articles first, taking
    turns), or about an article's title where it has no names."""
    # Reading every article would make /start slow on a large archive: only the newest.
    newest = index.newest_articles(count)
    per_article = [[*_names(index, entry), f"\u201c{entry.title}\u201d"] for entry in newest]
    turns = (s for round_ in itertools.zip_longest(*per_article) for s in round_ if s)
    subjects = list(dict.fromkeys(turns))[:count]
    return [f"What do the articles say about {subject}?" for subject in subjects]


def _names(index: SearchStore, entry: ArticleEntry) -> list[str]:
    """Distinct multi-word names in an article that are not just words of its title."""
    title_words = set(entry.title.split())
    found = (
        _LEADING.sub("", name)
        for passage in index.article_passages(entry.id)
        for name in _NAME.findall(passage.text)
    )
    names = [n for n in dict.fromkeys(found) if " " in n and not set(n.split()) <= title_words]
    return sorted(names, key=lambda name: len(name.split()) != 2)
