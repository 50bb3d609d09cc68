"""The articles folder as a collection that web articles join: one JSON line each, deduplicated.

The lines of `added.jsonl` are the source of truth for what was fetched: they hold the fields
`embeddings.articles` reads (`id`, `title`, `text`, `date`, `url`), so building the index from
the folder again gives the same index. An article is already present when its canonical address
or its text is in any article of the folder.
"""

from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass
from pathlib import Path

from embeddings.articles import article_files, read_articles
from embeddings.webpages import WebArticle, canonical_url, text_fingerprint

ADDED_FILE = "added.jsonl"


class Outcome(enum.Enum):
    ADDED = "Added"
    PRESENT = "Already present"
    DUPLICATE = "Duplicate"


@dataclass(frozen=True)
class Addition:
    """What became of one article offered to the collection, as one line for the log."""

    outcome: Outcome
    message: str
    article: WebArticle | None = None  # the article stored, when it was

    def __str__(self) -> str:
        return self.message

    @classmethod
    def present(cls, url: str) -> Addition:
        return cls(Outcome.PRESENT, f"Already present: {url}")


class Collection:
    """The addresses and text fingerprints of the articles in a folder, and the file new
    articles are appended to."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.path = data_dir / ADDED_FILE
        self._urls: set[str] = set()
        self._texts: dict[str, str] = {}
        self._signature: frozenset[tuple[str, int, int]] | None = None
        self.refresh()

    def refresh(self) -> None:
        """Read the folder again if its files changed since (another process may add)."""
        signature = _signature(self.data_dir)
        if signature == self._signature:
            return
        articles = read_articles(self.data_dir).articles if self.data_dir.is_dir() else []
        self._urls = {canonical_url(a.url) for a in articles if a.url}
        self._texts = {text_fingerprint(a.text): a.url or a.title for a in articles}
        self._signature = signature

    def knows(self, url: str) -> bool:
        """Whether an article from `url` is in the folder (checked before fetching it)."""
        return canonical_url(url) in self._urls

    def add(self, article: WebArticle) -> Addition:
        """Append `article` unless its address or its text is already in the folder."""
        where = article.url or f'"{article.title}"'
        if article.url and article.url in self._urls:
            return Addition.present(where)
        same_text = self._texts.get(article.fingerprint)
        if same_text is not None:
            message = f"Duplicate: {where} has the same text as {same_text}; not added"
            return Addition(Outcome.DUPLICATE, message)
        self._append(article)
        self._signature = _signature(self.data_dir)  # this line is known: no need to reread
        if article.url:
            self._urls.add(article.url)
        self._texts[article.fingerprint] = where
        dated = f"dated {article.date} from {article.date_from}"
        return Addition(Outcome.ADDED, f'Added "{article.title}" ({where}), {dated}', article)

    def _append(self, article: WebArticle) -> None:
        """One line, written and synced before the article counts as added."""
        record = {
            "id": article.fingerprint[:16],
            "title": article.title,
            "date": article.date.isoformat(),
            "url": article.url,
            "text": article.text,
            "fetched_at": article.fetched_at.isoformat(timespec="seconds"),
            "date_from": article.date_from,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A line cut short by a crash is closed, so it costs that line and not this one too.
        start = "\n" if _ends_mid_line(self.path) else ""
        with self.path.open("a", encoding="utf-8") as file:
            file.write(start + json.dumps(record, ensure_ascii=False) + "\n")
            file.flush()
            os.fsync(file.fileno())


def article_id(article: WebArticle) -> str:
    """The id the index gives an article of added.jsonl (as `embeddings.articles` reads it)."""
    return f"{Path(ADDED_FILE).stem}#{article.fingerprint[:16]}"


def _ends_mid_line(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            file.seek(-1, os.SEEK_END)
            return file.read(1) != b"\n"
    except OSError:  # no file yet, or an empty one
        return False


def _signature(folder: Path) -> frozenset[tuple[str, int, int]]:
    """The name, size and time of change of every article file below `folder`."""
    if not folder.is_dir():
        return frozenset()
    stats = ((path, path.stat()) for path in article_files(folder))
    return frozenset((str(path), stat.st_size, stat.st_mtime_ns) for path, stat in stats)
