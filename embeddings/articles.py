"""Reading article files into `Article`s, skipping (and naming) the ones that cannot be read.

Three formats are understood:

* the news export: a first line `` date YYYY-MM-DD Title``, paragraphs separated by blank lines,
  and a share-button tail (``Share this: Twitter``, ``Facebook``) that is not article text;
* plain ``.txt`` / ``.md``: the first line is the title (a Markdown ``#`` is dropped), no date;
* ``.jsonl``: one article per line, ``{"title", "text", "date"?, "url"?, "id"?}``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEXT_SUFFIXES = frozenset({".txt", ".md"})
JSONL_SUFFIX = ".jsonl"

_HEADER = re.compile(r"^\s*date\s+(\d{4}-\d{2}-\d{2})\s+(.*\S)\s*$")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")
# Share buttons and their labels that news exports append after the article body.
_SHARE_TAIL = re.compile(
    r"^(share this:?.*|like this:?.*|twitter|facebook|linkedin|whatsapp|telegram|reddit|"
    r"email|e-mail|print|pinterest|tumblr|pocket|skype|more|loading\.\.\.|like loading\.\.\.)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Article:
    """One news article: where it came from, its title and date, and its body text."""

    id: str
    title: str
    date: dt.date | None
    source: str
    text: str
    url: str | None = None

    @property
    def paragraphs(self) -> list[str]:
        """The body's paragraphs, each with its inner whitespace folded to single spaces."""
        return [p for p in (" ".join(b.split()) for b in _PARAGRAPH_BREAK.split(self.text)) if p]

    @property
    def content_hash(self) -> str:
        """A fingerprint of everything that ends up in the index, to detect changed articles."""
        fields = [self.title, self.date.isoformat() if self.date else "", self.url or "", self.text]
        return hashlib.sha256("\x1f".join(fields).encode()).hexdigest()


@dataclass(frozen=True)
class SkippedFile:
    """A file (or one line of a ``.jsonl`` file) that was not read, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class ReadResult:
    """The articles read from a folder, and the files that were skipped."""

    articles: list[Article] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)


class _BadArticleError(Exception):
    """Raised inside this module for a file that cannot become an article."""


def read_articles(folder: Path) -> ReadResult:
    """Read every article file below `folder`, in a stable (sorted) order."""
    result = ReadResult()
    for path in article_files(folder):
        relative = path.relative_to(folder).as_posix()
        try:
            if path.suffix.lower() == JSONL_SUFFIX:
                _read_jsonl(path, relative, result)
            else:
                result.articles.append(parse_text_article(_read_text(path), relative))
        except _BadArticleError as error:
            result.skipped.append(SkippedFile(relative, str(error)))
    return result


def article_files(folder: Path) -> Iterator[Path]:
    """Files below `folder` with a known suffix; hidden files and folders are ignored."""
    suffixes = TEXT_SUFFIXES | {JSONL_SUFFIX}
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if path.is_file() and path.suffix.lower() in suffixes and not _hidden(parts):
            yield path


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(part.startswith(".") for part in parts)


def _read_text(path: Path) -> str:
    """The file's text, or `_BadArticleError` naming why it is not a readable UTF-8 text file."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise _BadArticleError(f"cannot be read ({error.strerror or error})") from error
    if b"\x00" in data:
        raise _BadArticleError("is a binary file, not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise _BadArticleError(
            f"is not UTF-8 text (bad byte at offset {error.start}); re-save it as UTF-8"
        ) from error
    if not text.strip():
        raise _BadArticleError("is empty")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def parse_text_article(text: str, source: str) -> Article:
    """Parse a `.txt`/`.md` article: header or title line, then the body without share buttons."""
    first, _, body = text.strip("\n").partition("\n")
    header = _HEADER.match(first)
    if header:
        title, date = header.group(2), _parse_date(header.group(1))
    else:
        title, date = first.strip().lstrip("#").strip(), None
    body = _strip_share_tail(body)
    if not title:
        raise _BadArticleError("has no title on its first line")
    if not body.strip():
        raise _BadArticleError("has a title but no article text")
    return Article(id=_article_id(source), title=title, date=date, source=source, text=body)


def _parse_date(value: str) -> dt.date | None:
    """An ISO date, or None for an impossible one such as 2023-02-30."""
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def _strip_share_tail(body: str) -> str:
    """Drop trailing paragraphs that are share buttons, keeping the article text intact."""
    paragraphs = _PARAGRAPH_BREAK.split(body.strip())
    while paragraphs and _SHARE_TAIL.match(" ".join(paragraphs[-1].split())):
        paragraphs.pop()
    return "\n\n".join(paragraphs)


def _article_id(source: str) -> str:
    """A stable id from the file's path inside the articles folder, without its suffix."""
    return source.rsplit(".", 1)[0] if "." in source.rsplit("/", 1)[-1] else source


def _read_jsonl(path: Path, relative: str, result: ReadResult) -> None:
    """Read a `.jsonl` file; a bad line is skipped and named, the other lines still count."""
    lines = _read_text(path).split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            result.articles.append(_jsonl_article(line, relative, number))
        except _BadArticleError as error:
            result.skipped.append(SkippedFile(f"{relative} line {number}", str(error)))


def _jsonl_article(line: str, source: str, number: int) -> Article:
    """One `.jsonl` line as an article."""
    try:
        record: Any = json.loads(line)
    except json.JSONDecodeError as error:
        raise _BadArticleError(f"is not valid JSON ({error.msg})") from error
    except (ValueError, RecursionError) as error:  # a number of over 4300 digits, deep nesting
        raise _BadArticleError("is not usable JSON (a huge number or too deep nesting)") from error
    if not isinstance(record, dict):
        raise _BadArticleError("is not a JSON object")
    title, text = _string(record, "title"), _string(record, "text")
    if not title or not text:
        raise _BadArticleError('needs non-empty "title" and "text" strings')
    date_value = _string(record, "date")
    key = _string(record, "id") or str(number)
    if not _valid_unicode(title, text, date_value, key, _string(record, "url")):
        raise _BadArticleError("has a lone surrogate escape such as \\ud800, not valid text")
    return Article(
        id=f"{_article_id(source)}#{key}",
        title=" ".join(title.split()),
        date=_parse_date(date_value[:10]) if date_value else None,
        source=source,
        text=text.replace("\r\n", "\n"),
        url=_string(record, "url") or None,
    )


def _valid_unicode(*values: str) -> bool:
    """False when a JSON escape left a lone surrogate, which no file or message can hold."""
    try:
        "".join(values).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _string(record: dict[str, Any], key: str) -> str:
    """A field as stripped text; numbers are accepted (ids often are), anything else is empty."""
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int):
        return ""
    return str(value).strip()
