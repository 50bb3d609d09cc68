"""Property-based tests: no article file, passage or question can break a build or a reply.

Hypothesis writes arbitrary bytes and text (zero-width and right-to-left characters, emoji,
HTML-like text, mixed encodings, impossible dates) to real files, and the reader, the splitter,
the index and the reply formatting must cope: a file is read or named as skipped with its
reason, passages keep every character of the article in order, and every reply is valid
Telegram HTML within the limit as the local Bot API server's port of tdlib's parser sees it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bot.replies import answers_message, article_messages, telegram_length
from embeddings.articles import Article, ReadResult, read_articles
from embeddings.errors import EmptyQuestionError
from embeddings.index.build import build_index
from embeddings.index.index import Index
from embeddings.passages import Passage, split_article
from embeddings.search.ranking import Ranked, collapse_duplicates
from embeddings.search.searcher import Answer, Hit, Searcher
from embeddings.sentences import sentence_spans, split_sentences
from testbed.fake_encoder import FakeEncoder
from testbed.telegram_server import MAX_TEXT_LENGTH, format_message_text, parse_html, utf16_slice

# Hypothesis examples run in one test call, so they cannot share pytest's tmp_path.
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces that have broken text handling somewhere: invisible and bidi controls, markup,
# entities, emoji sequences, other scripts, combining marks, odd spaces, sentence ends.
ODD = [
    "\u200b", "\u200c", "\u200d", "\ufeff", "\u2060", "\u202e", "\u202d", "\u200f", "\u2067",
    "<", ">", "&", "&amp;", "&lt;b&gt;", "&#x27;", "&#0;", "<b>", "</b>", "</blockquote>",
    '<a href="http://evil.test">x</a>', "<tg-spoiler>", '"', "'", "\\", "`", "*", "_", "[x](y)",
    "👩‍👩‍👧‍👦", "😀", "🇺🇦", "中文新闻", "Привет", "مرحبا", "שלום", "e\u0301", "\u0333",
    "\t", "\u00a0", "\u3000", "\u2028", ".", "!", "?", "。", "…", "Dr.", "U.S.", "A.",
]  # fmt: skip
WORDS = ["the", "Mayor", "said", "river", "rose", "Jiang", "Hui", "press", "conference", "2023"]

fragment = st.one_of(st.sampled_from(ODD), st.sampled_from(WORDS), st.text(min_size=1, max_size=6))
space = st.sampled_from([" ", " ", " ", "  ", "\n"])
messy = st.lists(st.one_of(fragment, space), max_size=60).map("".join)
# A paragraph as the reader produces it: whitespace folded to single spaces, never empty.
paragraph = messy.map(lambda text: " ".join(text.split())).filter(bool)
# A line of text: what a title can be (a file's first line has no line breaks).
line = messy.map(lambda text: " ".join(text.split()))


def _words(text: str) -> str:
    """The text without any whitespace: what must survive splitting and quoting unchanged."""
    return "".join(text.split())


def _read_one(name: str, content: bytes) -> ReadResult:
    """Write one file to a fresh folder and read the folder."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / name).write_bytes(content)
        return read_articles(Path(folder))


# -- reading files -------------------------------------------------------------------------

file_bytes = st.one_of(
    st.binary(max_size=400),
    messy.map(str.encode),
    st.tuples(messy, messy).map(lambda p: p[0].encode() + p[1].encode("latin-1", "replace")),
    messy.map(lambda text: "\ufeff".encode() + text.replace("\n", "\r\n").encode()),
    messy.map(lambda text: text.encode("utf-16")),
    messy.map(lambda text: text.replace("\n", "\r").encode()),
)


def _file_problem(content: bytes) -> str | None:
    """Why the whole file cannot be text, as the reader must say it; None when it is text."""
    if b"\x00" in content:
        return "is a binary file"
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        return "is not UTF-8 text"
    return None if text.strip() else "is empty"


@FAST
@given(content=file_bytes, suffix=st.sampled_from([".txt", ".md"]))
def test_any_text_file_is_read_or_named_with_its_reason(content: bytes, suffix: str) -> None:
    """Arbitrary bytes never raise: the file is one article, or skipped by name with its reason."""
    result = _read_one(f"article{suffix}", content)
    problem = _file_problem(content)
    if result.articles:
        assert problem is None and not result.skipped
        assert [a.source for a in result.articles] == [f"article{suffix}"]
        return
    [skipped] = result.skipped
    assert skipped.path == f"article{suffix}"
    expected = [problem] if problem else ["has no title", "has a title but no article text"]
    assert any(skipped.reason.startswith(reason) for reason in expected), skipped.reason


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | messy,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(messy, inner, max_size=3),
    max_leaves=6,
)
record = st.fixed_dictionaries(
    {"title": st.one_of(line, json_value), "text": st.one_of(messy, json_value)},
    optional={
        "date": st.one_of(messy, st.dates().map(str), json_value),
        "id": st.one_of(st.integers(), messy, json_value),
        "url": st.one_of(messy, json_value),
    },
)
jsonl_line = st.one_of(
    record.map(json.dumps),
    record.map(lambda r: json.dumps(r, ensure_ascii=False)),
    json_value.map(json.dumps),
    messy,
    st.sampled_from(
        [
            '{"title": "\\ud800", "text": "a lone surrogate"}',
            '{"title": "T", "text": "x", "id": ' + "9" * 5000 + "}",
            "[" * 5000 + "]" * 5000,
            '{"title": "T", "text": "x", "date": "2023-02-30"}',
        ]
    ),
)


@FAST
@given(lines=st.lists(jsonl_line, max_size=6), newline=st.sampled_from(["\n", "\r\n", "\r"]))
def test_any_jsonl_line_is_an_article_or_named_with_its_line_number(
    lines: list[str], newline: str
) -> None:
    """Every non-blank line of a `.jsonl` file is an article or a skipped `line N`, never a crash."""
    content = newline.join(lines).encode()
    result = _read_one("feed.jsonl", content)
    if problem := _file_problem(content):
        assert [(s.path, s.reason.startswith(problem)) for s in result.skipped] == [
            ("feed.jsonl", True)
        ]
        return
    text = content.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    numbered = [n for n, row in enumerate(text.split("\n"), start=1) if row.strip()]
    skipped = {s.path: s.reason for s in result.skipped}
    assert len(result.articles) + len(skipped) == len(numbered)
    assert set(skipped) <= {f"feed.jsonl line {n}" for n in numbered}
    assert all(skipped.values())
    for article in result.articles:
        assert article.title and article.text.strip()
        (article.title + article.text + article.id).encode()  # storable as UTF-8


dates = st.tuples(st.integers(0, 9999), st.integers(0, 99), st.integers(0, 99)) | st.dates().map(
    lambda d: (d.year, d.month, d.day)
)


def _date_or_none(year: int, month: int, day: int) -> dt.date | None:
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


@FAST
@given(
    title=line.filter(lambda t: any(c.isalnum() for c in t) and not t.startswith("\ufeff")),
    date=st.none() | dates,
    paragraphs=st.lists(paragraph, min_size=1, max_size=6),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    bom=st.booleans(),
)
def test_text_article_keeps_title_date_and_every_paragraph(
    title: str,
    date: tuple[int, int, int] | None,
    paragraphs: list[str],
    newline: str,
    bom: bool,
) -> None:
    """Header or plain title, any (even impossible) date, any line endings: the text survives."""
    paragraphs = [*paragraphs, "The end of the story."]  # never a share-button tail
    header = f" date {date[0]:04d}-{date[1]:02d}-{date[2]:02d} {title}" if date else title
    content = ("\ufeff" if bom else "") + "\n\n".join([header, *paragraphs]).replace("\n", newline)
    assume("\x00" not in content)  # a NUL makes it a binary file, tested above
    [article] = _read_one("a.txt", content.encode()).articles
    expected_title = title.strip() if date else title.strip().lstrip("#").strip()
    assert article.title == expected_title
    assert article.date == (_date_or_none(*date) if date else None)
    assert _words(article.text) == _words("".join(paragraphs))
    assert article.paragraphs[-1] == "The end of the story."


def test_ten_megabyte_article_is_read_and_split_without_losing_text(tmp_path: Path) -> None:
    """A 10 MB article file (about 20,000 paragraphs) is read and split whole, in seconds."""
    para = "The council met on Monday. Mr. Smith said the U.S. plan was late, and 40 objected. " * 6
    paragraphs = [f"{i} {para.strip()}" for i in range(10_000_000 // len(para))]
    (tmp_path / "big.txt").write_text(" date 2024-01-02 Big\n\n" + "\n\n".join(paragraphs))
    assert (tmp_path / "big.txt").stat().st_size >= 10_000_000
    [article] = read_articles(tmp_path).articles
    passages = split_article(article, FakeEncoder().count_tokens, 256)
    assert len(passages) == len(paragraphs)
    assert _words("".join(p.text for p in passages)) == _words("".join(paragraphs))


def test_huge_single_line_files_are_read_or_named(tmp_path: Path) -> None:
    """A 2 MB file of one line is skipped as title-only; 0.5 MB of initials in one line is split."""
    (tmp_path / "one-line.txt").write_text("word " * 400_000)
    (tmp_path / "initials.txt").write_text("Title\n" + "A. B. " * 85_000)  # once quadratic
    result = read_articles(tmp_path)
    assert [(s.path, s.reason) for s in result.skipped] == [
        ("one-line.txt", "has a title but no article text")
    ]
    [article] = result.articles
    passages = split_article(article, FakeEncoder().count_tokens, 256)
    assert _words("".join(p.text for p in passages)) == _words(article.text)


# -- splitting into passages ----------------------------------------------------------------


def _word_tokens(text: str) -> int:
    return len(text.split()) + 2


def _char_tokens(text: str) -> int:
    """A tokenizer that charges by length, so one long word alone can exceed the limit."""
    return len(text) // 4 + 2


@FAST
@given(
    title=line.filter(bool),
    paragraphs=st.lists(messy, min_size=1, max_size=5),
    max_tokens=st.integers(3, 80),
    counter=st.sampled_from([_word_tokens, _char_tokens]),
)
def test_passages_keep_every_character_in_order_within_the_limit(
    title: str, paragraphs: list[str], max_tokens: int, counter: Callable[[str], int]
) -> None:
    """Splitting loses and invents nothing; every passage fits when each single word does."""
    article = Article("a", title, None, "a.txt", "\n\n".join(paragraphs))
    passages = split_article(article, counter, max_tokens)
    assert _words("".join(p.text for p in passages)) == _words("".join(article.paragraphs))
    assert [p.id for p in passages] == [f"a:{i}" for i in range(len(passages))]
    assert all(p.text and p.text == p.text.strip() for p in passages)
    if all(counter(f"{title}\n{word}") <= max_tokens for word in article.text.split()):
        assert all(counter(p.embedding_text) <= max_tokens for p in passages)


@FAST
@given(text=paragraph)
def test_sentences_cover_the_text_exactly(text: str) -> None:
    """Sentences are in order, without gaps or overlaps; their spans index the text itself."""
    sentences = split_sentences(text)
    assert _words("".join(sentences)) == _words(text)
    spans = sentence_spans(text)
    assert [text[a:b] for a, b in spans] == (sentences or [text])
    assert all(a < b for a, b in spans) and spans == sorted(spans)


# -- replies --------------------------------------------------------------------------------

ALLOWED_ENTITIES = {"bold", "italic", "expandable_blockquote"}


def _passage(text: str, title: str, ordinal: int = 0, url: str | None = None) -> Passage:
    return Passage(f"a:{ordinal}", "a", ordinal, title, dt.date(2023, 7, 9), "a.txt", text, url)


def _telegram_accepts(html: str) -> tuple[str, list[dict[str, object]]]:
    """Plain text and entities as Telegram stores them; raises like Telegram on bad HTML."""
    plain, entities = format_message_text(html, "HTML", strict=True)
    assert telegram_length(plain) <= MAX_TEXT_LENGTH
    return plain, entities


answer = st.builds(
    lambda text, title, choice: Answer(
        Hit(_passage(text, title), 0.5), *sentence_spans(text)[choice % len(sentence_spans(text))]
    ),
    text=paragraph | st.integers(1, 12_000).map(lambda n: ("😀 " * n).strip()),
    title=line.filter(bool) | st.just("T" * 10_000),
    choice=st.integers(0, 50),
)


@FAST
@given(answers=st.lists(answer, min_size=1, max_size=3))
def test_any_answers_make_valid_html_within_the_limit(answers: list[Answer]) -> None:
    """Any passages and titles give HTML Telegram accepts, only our own formatting, and the
    answering sentence (whole, when nothing had to be trimmed) in bold."""
    html = answers_message(answers)
    _, entities = _telegram_accepts(html)
    assert {e["type"] for e in entities} <= ALLOWED_ENTITIES
    plain, parsed = parse_html(html, strict_ampersand=True)
    covered = {
        kind: [utf16_slice(plain, e["offset"], e["length"]) for e in parsed if e["type"] == kind]
        for kind in ALLOWED_ENTITIES
    }
    fits = all(
        telegram_length(a.hit.passage.text) < 1000 and len(a.hit.passage.title) <= 200
        for a in answers
    )
    if fits:  # nothing needed trimming: every passage is quoted whole, its sentence in bold
        assert [_words(q) for q in covered["expandable_blockquote"]] == [
            _words(a.hit.passage.text) for a in answers
        ]
        assert all(a.sentence in covered["bold"] for a in answers)


@SLOW
@given(texts=st.lists(paragraph, min_size=1, max_size=8), question=messy | st.just("x " * 5000))
def test_any_question_gets_a_valid_reply_or_the_empty_question_notice(
    texts: list[str], question: str
) -> None:
    """Over any passages, any question (even 10,000 characters) is answered in valid HTML,
    unless it has no words at all, which is the one error the bot turns into a notice."""
    encoder = FakeEncoder()
    passages = [_passage(text, f"Title {i}", i) for i, text in enumerate(texts)]
    index = Index.from_passages(
        passages, encoder.encode_passages([p.embedding_text for p in passages])
    )
    try:
        answers = Searcher(index, encoder).ask(question, 3)
    except EmptyQuestionError:
        assert not any(char.isalnum() for char in question)
        return
    # Fewer only when some passages are copies of one another (shown once, as wire copies are).
    copies = any(_copies(a.text, b.text) for a, b in itertools.combinations(passages, 2))
    expected = min(3, len(passages))
    assert len(answers) == expected or (copies and 1 <= len(answers) < expected)
    assert len({a.hit.passage.id for a in answers}) == len(answers)
    _, entities = _telegram_accepts(answers_message(answers))
    assert {e["type"] for e in entities} <= ALLOWED_ENTITIES


def _copies(first: str, second: str) -> bool:
    """True when the ranking would show only one of the two texts."""
    pair = [Ranked(0, 1.0), Ranked(1, 1.0)]
    return len(collapse_duplicates(pair, [first, second])) == 1


url = st.one_of(
    st.none(),
    st.just("https://news.test/a?x=1&y=<2>\"'"),
    st.sampled_from(["javascript:alert(1)", "tg://user?id=42", "http://evil.test/\u202e"]),
    messy,
)


@FAST
@given(
    texts=st.lists(paragraph | st.just("word " * 3000), min_size=1, max_size=6),
    title=line.filter(bool) | st.just("T" * 10_000),
    link=url,
)
def test_whole_article_is_valid_html_in_messages_that_lose_nothing(
    texts: list[str], title: str, link: str | None
) -> None:
    """Any article, however long its title or paragraphs, becomes valid messages within the
    limit that hold every character of its text in order, with no link but an http(s) source."""
    passages = [_passage(text, title, i, link) for i, text in enumerate(texts)]
    plains = []
    for html in article_messages(passages):
        _, entities = _telegram_accepts(html)
        assert {e["type"] for e in entities} <= ALLOWED_ENTITIES | {"text_link"}
        for entity in entities:
            if entity["type"] == "text_link":
                assert link and re.match(r"(?i)https?://", link) and entity["length"] == 6
        plains.append(parse_html(html, strict_ampersand=True)[0])
    body = _words("".join(plains))
    assert _words("".join(texts)) in body


# -- the whole build ---------------------------------------------------------------------------


@SLOW
@given(
    files=st.lists(st.tuples(st.sampled_from([".txt", ".md", ".jsonl"]), file_bytes), max_size=4)
)
def test_any_folder_builds_an_index_that_loads_and_answers(
    files: list[tuple[str, bytes]],
) -> None:
    """Whatever the folder holds, the build names skipped files and writes an index that loads
    back equal and answers, or says there is nothing to index."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "data").mkdir()
        for number, (suffix, content) in enumerate(files):
            (root / "data" / f"{number}{suffix}").write_bytes(content)
        result = read_articles(root / "data")
        assert all(s.reason for s in result.skipped)
        if not result.articles:
            return
        encoder = FakeEncoder()
        build_index(result.articles, encoder, root / "index")
        index = Index.load(root / "index", model=encoder.name)
        expected = [
            passage
            for article in result.articles
            for passage in split_article(article, encoder.count_tokens, encoder.max_tokens)
        ]
        assert list(index.passages) == expected
        assert np.all(np.isfinite(index.vectors))
        question = next((w for p in index.passages for w in p.text.split()), "news")
        try:
            Searcher(index, encoder).ask(question, 3)
        except EmptyQuestionError:
            assert not any(char.isalnum() for char in question)
