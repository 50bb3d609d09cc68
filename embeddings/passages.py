"""Splitting articles into passages a person would want quoted, each within the model's limit.

A passage is a paragraph. A paragraph too long for the model is cut at sentence boundaries
(a single over-long sentence at word boundaries), because the encoder silently truncates what
does not fit. Fragments too short to stand alone are merged with a neighbour when that fits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from embeddings.articles import Article
from embeddings.sentences import split_sentences

# Passages with fewer words than this are merged into a neighbour where the limit allows.
MIN_WORDS = 12
# The most of a title embedded with each passage: about 25 tokens of English, or 120 of Chinese,
# so that a title as long as an article leaves most of a 256-token model's room to the passage.
EMBEDDED_TITLE_LENGTH = 120

TokenCounter = Callable[[str], int]


@dataclass(frozen=True)
class Passage:
    """A quotable piece of one article, with the article's metadata carried along."""

    id: str
    article_id: str
    ordinal: int
    title: str
    date: dt.date | None
    source: str
    text: str
    url: str | None = None

    @property
    def embedding_text(self) -> str:
        """What the encoder sees: the article title gives the passage its context."""
        return embedding_text(self.title, self.text)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready record; `from_json` reads it back."""
        record: dict[str, Any] = {
            "id": self.id,
            "article_id": self.article_id,
            "ordinal": self.ordinal,
            "title": self.title,
            "date": self.date.isoformat() if self.date else None,
            "source": self.source,
            "text": self.text,
        }
        if self.url:
            record["url"] = self.url
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Passage:
        """The passage a `to_json` record describes."""
        date = record.get("date")
        return cls(
            id=record["id"],
            article_id=record["article_id"],
            ordinal=record["ordinal"],
            title=record["title"],
            date=dt.date.fromisoformat(date) if date else None,
            source=record["source"],
            text=record["text"],
            url=record.get("url"),
        )


def embedding_text(title: str, text: str) -> str:
    """The text embedded for a passage of an article titled `title` (cut short if long)."""
    return f"{embedded_title(title)}\n{text}"


def embedded_title(title: str) -> str:
    """The title, or as much of it as fits `EMBEDDED_TITLE_LENGTH`, cut after a word if it can."""
    if len(title) <= EMBEDDED_TITLE_LENGTH:
        return title
    cut = title[: EMBEDDED_TITLE_LENGTH + 1]
    return cut.rsplit(maxsplit=1)[0] if " " in cut.strip() else cut[:-1]


def split_article(article: Article, count_tokens: TokenCounter, max_tokens: int) -> list[Passage]:
    """The article's passages; `count_tokens` measures with the model's own tokenizer."""

    def fits(text: str) -> bool:
        return count_tokens(embedding_text(article.title, text)) <= max_tokens

    chunks: list[str] = []
    for paragraph in article.paragraphs:
        chunks.extend([paragraph] if fits(paragraph) else _split_long(paragraph, fits))
    return [
        Passage(
            id=f"{article.id}:{ordinal}",
            article_id=article.id,
            ordinal=ordinal,
            title=article.title,
            date=article.date,
            source=article.source,
            text=text,
            url=article.url,
        )
        for ordinal, text in enumerate(_merge_fragments(chunks, fits))
    ]


def _split_long(paragraph: str, fits: Callable[[str], bool]) -> list[str]:
    """Pack a paragraph's sentences into chunks that fit; words for an over-long sentence."""
    pieces: list[str] = []
    for sentence in split_sentences(paragraph):
        pieces.extend([sentence] if fits(sentence) else sentence.split())
    return pack_pieces(pieces, fits)


def pack_pieces(pieces: list[str], fits: Callable[[str], bool]) -> list[str]:
    """Greedily join consecutive pieces with spaces while the result still fits: passages
    within the model's token limit here, messages within Telegram's length in the bot."""
    chunks: list[str] = []
    for piece in pieces:
        if chunks and fits(joined := f"{chunks[-1]} {piece}"):
            chunks[-1] = joined
        else:
            chunks.append(piece)
    return chunks


def _merge_fragments(chunks: list[str], fits: Callable[[str], bool]) -> list[str]:
    """Merge chunks shorter than `MIN_WORDS` into the next (or, at the end, the previous) one."""
    merged: list[str] = []
    pending = ""  # a short fragment waiting to join the chunk after it
    for chunk in chunks:
        if pending and fits(joined := f"{pending} {chunk}"):
            chunk = joined
        elif pending:
            merged.append(pending)
        pending = chunk if len(chunk.split()) < MIN_WORDS else ""
        if not pending:
            merged.append(chunk)
    if pending and merged and fits(joined := f"{merged[-1]} {pending}"):
        merged[-1] = joined
    elif pending:
        merged.append(pending)
    return merged
