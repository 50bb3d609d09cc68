"""Reply formatting: valid Telegram HTML, escaped, within 4096 characters after parsing."""

from __future__ import annotations

import datetime as dt

import pytest

from bot.replies import MAX_LENGTH, answers_message, article_messages, telegram_length
from embeddings.passages import Passage
from embeddings.search.searcher import Answer, Hit
from embeddings.sentences import sentence_spans
from testbed.telegram_server import parse_html


def _passage(
    text: str, title: str = "A title", ordinal: int = 0, url: str | None = None
) -> Passage:
    return Passage(
        id=f"a:{ordinal}",
        article_id="a",
        ordinal=ordinal,
        title=title,
        date=dt.date(2023, 7, 9),
        source="a.txt",
        text=text,
        url=url,
    )


def _answer(text: str, sentence: int = 0, title: str = "A title") -> Answer:
    start, end = sentence_spans(text)[sentence]
    return Answer(Hit(_passage(text, title), 0.5), start, end)


def _parsed(html: str) -> tuple[str, list[dict[str, object]]]:
    plain, entities = parse_html(html)
    assert telegram_length(plain) <= MAX_LENGTH
    return plain, entities


def test_answer_has_title_date_quote_and_bold_sentence() -> None:
    """Header in bold, date in italics, the passage in an expandable quote, the sentence bold."""
    html = answers_message([_answer("First sentence here. The answer is this one. Last one.", 1)])
    assert html == (
        "<b>1. A title</b>\n<i>9 July 2023</i>\n<blockquote expandable>First sentence here. "
        "<b>The answer is this one.</b> Last one.</blockquote>"
    )
    _parsed(html)


HOSTILE = [
    "<script>alert(1)</script> & friends.",
    'Click <a href="http://evil.test">here</a> now.',
    "Fish &amp; chips &lt;b&gt; are < than > you think &#x27;.",
    "Emoji 👩‍👩‍👧‍👦 and RTL \u202e text \u200b zero width.",
    "</blockquote><b>unbalanced",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_article_text_cannot_inject_markup(text: str) -> None:
    """Whatever the passage says, the reply parses and shows it literally, with no extra links."""
    plain, entities = _parsed(answers_message([_answer(text, title=text)]))
    assert text.split()[0] in plain
    assert {e["type"] for e in entities} <= {
        "bold",
        "italic",
        "expandable_blockquote",
        "blockquote",
    }


def test_over_long_answer_is_trimmed_at_sentences_keeping_the_answer() -> None:
    """Three huge passages are cut at sentence boundaries to fit; answer sentences survive."""
    answers = []
    for i in range(3):
        sentences = [f"Filler sentence {j} of passage {i} goes on for a while." for j in range(60)]
        sentences[30] = f"The answer for passage {i} is here."
        answers.append(_answer(" ".join(sentences), 30))
    html = answers_message(answers)
    plain, _ = _parsed(html)
    for i in range(3):
        assert f"<b>The answer for passage {i} is here.</b>" in html
    assert "\u2026" in plain


def test_monstrous_title_and_sentence_still_fit() -> None:
    """A 10,000-character title and a one-sentence 10,000-character passage are shortened."""
    giant = "word " * 2000
    plain, _ = _parsed(answers_message([_answer(giant.strip(), title=giant)] * 3))
    assert len(plain) <= MAX_LENGTH


def test_emoji_count_twice_towards_the_limit() -> None:
    """Astral-plane characters count as two UTF-16 units, as Telegram counts them."""
    assert telegram_length("😀a") == 3
    text = " ".join(["😀😀😀 emoji sentence."] * 400)
    _parsed(answers_message([_answer(text)] * 3))


def test_whole_article_is_split_into_messages_within_the_limit() -> None:
    """A long article becomes several valid messages, paragraphs whole and in order."""
    passages = [
        _passage(
            f"Paragraph {i}. " + "Some text here. " * 60, ordinal=i, url="https://n.test/a?x=1&y=2"
        )
        for i in range(12)
    ]
    messages = article_messages(passages)
    assert len(messages) > 1
    plains = [_parsed(m)[0] for m in messages]
    joined = "\n\n".join(plains)
    assert [joined.index(f"Paragraph {i}.") for i in range(12)] == sorted(
        joined.index(f"Paragraph {i}.") for i in range(12)
    )
    assert plains[0].startswith("A title\n9 July 2023\nSource")
