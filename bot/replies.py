"""The bot's replies as Telegram HTML: pure functions, always escaped, always within the limit.

Replies are assembled from plain-text pieces, each escaped and wrapped in its tags as it is
added, so the length Telegram counts (the text after entities are parsed, in UTF-16 code units)
is known exactly and a trim can never cut inside a tag or an entity.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from html import escape

from telegram.constants import MessageLimit

from bot.messages import ENGLISH, say, template
from bot.service import Stats
from embeddings import (
    Answer,
    Passage,
    pack_pieces,
    split_sentences,
)

MAX_LENGTH = MessageLimit.MAX_TEXT_LENGTH
ELLIPSIS = "\u2026"
PARAGRAPH_BREAK = "\n\n"  # between quotes, and between the paragraphs of a whole article
# The longest piece of a whole article: with the paragraph break before it, one message.
PIECE_LENGTH = MAX_LENGTH - len(PARAGRAPH_BREAK)  # ASCII: as long in UTF-16 as in characters
SOURCE_LINK = "Source"
TITLE_LENGTH = 200  # characters of a title shown in a header
# Only web addresses become a "Source" link; an article's url could be anything.
_WEB_LINK = re.compile(r"https?://[^\s/?#]+\.", re.IGNORECASE)


def telegram_length(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units (an emoji may count as two)."""
    return len(text.encode("utf-16-le")) // 2


@dataclass
class Html:
    """A reply under construction: its HTML and the plain text Telegram will count."""

    parts: list[str] = field(default_factory=list)
    plain: int = 0

    def text(self, text: str, tag: str = "") -> Html:
        """Add escaped `text`, wrapped in `<tag>` when given."""
        self.plain += telegram_length(text)
        escaped = escape(text, quote=False)
        self.parts.append(f"<{tag}>{escaped}</{tag.split()[0]}>" if tag and text else escaped)
        return self

    def raw(self, html: str, plain_length: int) -> Html:
        """Add HTML already built by another `Html` (with its plain length)."""
        self.parts.append(html)
        self.plain += plain_length
        return self

    def render(self) -> str:
        return "".join(self.parts)


# Months as a Russian date names them, in the genitive: "9 июля 2023".
_RUSSIAN_MONTHS = (
    "января", "февраля", "марта", "апреля", "мая", "июня",
    "июля", "августа", "сентября", "октября", "ноября", "декабря",
)  # fmt: skip


def format_date(date: dt.date | None, language: str = ENGLISH) -> str:
    """A date as people write it in `language` ("9 July 2023", "9 июля 2023", "2023年7月9日"),
    or an empty string."""
    if date is None:
        return ""
    if language == "ru":
        return f"{date.day} {_RUSSIAN_MONTHS[date.month - 1]} {date.year}"
    if language == "zh":
        return f"{date.year}年{date.month}月{date.day}日"
    return f"{date.day} {date:%B %Y}"


def introduction_message(stats: Stats, language: str = ENGLISH) -> str:
    """/start and /help: how many articles, from when to when, three example questions, and
    how to ask in a group."""
    noun = "article_count_one" if stats.articles == 1 else "article_count"
    count = _html(template(noun, language), n=f"<b>{stats.articles}</b>")
    dates = _date_span(stats.first_date, stats.last_date, language)
    examples = "\n".join(f"• {escape(shorten(q, TITLE_LENGTH))}" for q in stats.examples)
    return (
        f"{_html(template('introduction', language), count=count, dates=dates)}\n\n"
        f"{escape(say('examples', language))}\n{examples}\n\n{escape(say('in_groups', language))}"
    )


def _date_span(first: dt.date | None, last: dt.date | None, language: str) -> str:
    """ " (9 July 2023 to 10 June 2024)" in `language` as HTML; one date if both are the same."""
    days = list(dict.fromkeys(format_date(d, language) for d in (first, last) if d))
    if not days:
        return ""
    key = "date_range" if len(days) == 2 else "one_date"
    return _html(template(key, language), first=escape(days[0]), last=escape(days[-1]))


def about_message(stats: Stats, language: str = ENGLISH) -> str:
    """/about: the index's articles, passages, model and build time, a line each."""
    rows = [
        ("about_articles", str(stats.articles)),
        ("about_passages", str(stats.passages)),
        ("about_model", stats.model.rsplit("/", 1)[-1]),
        ("about_built", stats.built_at.replace("T", " ")),
    ]
    return "\n".join(f"<b>{escape(say(key, language))}</b> {escape(value)}" for key, value in rows)


def _html(sentence: str, **html: str) -> str:
    """`sentence` as HTML: its own words escaped, each `{placeholder}` filled with HTML."""
    return escape(sentence, quote=False).format(**html)


def answers_message(answers: list[Answer], first_rank: int = 1) -> str:
    """The passages that answer a question, each under its article's title and date.

    Quotes are trimmed at sentence boundaries (the answering sentence stays, shortened only as a
    last resort) until the whole message fits Telegram's limit.
    """
    quotes = [_Quote.of(answer) for answer in answers]
    message = _assemble(quotes, first_rank)
    while message.plain > MAX_LENGTH:
        max(quotes, key=lambda q: q.length()).trim()
        message = _assemble(quotes, first_rank)
    return message.render()


def _assemble(quotes: list[_Quote], first_rank: int) -> Html:
    message = Html()
    for rank, quote in enumerate(quotes, start=first_rank):
        if rank > first_rank:
            message.text(PARAGRAPH_BREAK)
        passage = quote.answer.hit.passage
        message.text(f"{rank}. {shorten(passage.title, TITLE_LENGTH)}", "b")
        if passage.date:
            message.text("\n").text(format_date(passage.date), "i")
        message.text("\n")
        quote.render_into(message)
    return message


def shorten(text: str, limit: int) -> str:
    """`text` cut at a word boundary to at most `limit` characters, marked with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - len(ELLIPSIS)]
    # Back up to a word boundary only when one is in the second half: a cut that loses more than
    # half the room to one long word says less than a cut inside the word.
    return (cut.rsplit(" ", 1)[0] if " " in cut[limit // 2 :] else cut) + ELLIPSIS


@dataclass
class _Quote:
    """A passage as sentences around the answering one, trimmable from either end."""

    answer: Answer
    sentence: str
    before: list[str]
    after: list[str]
    cut_before: bool = False
    cut_after: bool = False

    @classmethod
    def of(cls, answer: Answer) -> _Quote:
        text = answer.hit.passage.text
        before = split_sentences(text[: answer.sentence_start])
        after = split_sentences(text[answer.sentence_end :])
        return cls(answer, answer.sentence, before, after)

    def length(self) -> int:
        return sum(map(telegram_length, [*self.before, self.sentence, *self.after]))

    def trim(self) -> None:
        """Drop the outer sentence on the longer side; with none left, halve the sentence."""
        if self.after and sum(map(len, self.after)) >= sum(map(len, self.before)):
            self.after.pop()
            self.cut_after = True
        elif self.before:
            self.before.pop(0)
            self.cut_before = True
        else:
            self.sentence = shorten(self.sentence, max(len(self.sentence) // 2, 1))

    def render_into(self, message: Html) -> None:
        quote = Html()
        if self.cut_before:
            quote.text(ELLIPSIS + " ")
        if self.before:
            quote.text(" ".join(self.before) + " ")
        quote.text(self.sentence, "b")
        if self.after:
            quote.text(" " + " ".join(self.after))
        if self.cut_after:
            quote.text(" " + ELLIPSIS)
        message.raw(f"<blockquote expandable>{quote.render()}</blockquote>", quote.plain)


def article_messages(passages: list[Passage]) -> list[str]:
    """A whole article as one or more messages, split between paragraphs (or sentences)."""
    if not passages:
        return []
    first = passages[0]
    header = Html().text(shorten(first.title, TITLE_LENGTH), "b")
    if first.date:
        header.text("\n").text(format_date(first.date), "i")
    if first.url and _WEB_LINK.match(first.url):
        link = f'<a href="{escape(first.url)}">{escape(SOURCE_LINK)}</a>'
        header.text("\n").raw(link, telegram_length(SOURCE_LINK))
    messages, current = [], Html().raw(header.render(), header.plain)
    for piece in _pieces(passages):
        if current.plain + telegram_length(PARAGRAPH_BREAK + piece) > MAX_LENGTH:
            messages.append(current.render())
            current = Html()
        current.text((PARAGRAPH_BREAK if current.parts else "") + piece)
    messages.append(current.render())
    return messages


def _pieces(passages: list[Passage]) -> list[str]:
    """Paragraph-sized texts, each short enough for one message after a paragraph break."""
    return [piece for passage in passages for piece in _fitting(passage.text, PIECE_LENGTH)]


def _fitting(text: str, limit: int) -> list[str]:
    """`text` in pieces of at most `limit` UTF-16 units, losing nothing: whole if it fits, else
    cut between sentences, then between words, then (one giant word) between characters."""
    if telegram_length(text) <= limit:
        return [text]
    for parts in (split_sentences(text), text.split(" ")):
        if len(parts) > 1:
            pieces = [piece for part in parts for piece in _fitting(part, limit)]
            return pack_pieces(pieces, lambda joined: telegram_length(joined) <= limit)
    pieces, current, length = [], "", 0
    for char in text:
        if length + (width := telegram_length(char)) > limit:
            pieces.append(current)
            current, length = "", 0
        current, length = current + char, length + width
    return [*pieces, current]
