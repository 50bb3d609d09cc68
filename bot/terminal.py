"""Answers rendered for a terminal: the `ask` and `chat` commands' output."""

from __future__ import annotations

import json
import shutil
import textwrap
from typing import Any

import click

from embeddings.search import Answer


def answer_block(rank: int, answer: Answer) -> str:
    """One answer as a header line and the passage, its answering sentence in bold."""
    passage = answer.hit.passage
    date = f" — {passage.date.isoformat()}" if passage.date else ""
    header = click.style(f"{rank}. {passage.title}{date}", fg="cyan", bold=True)
    score = click.style(f"(score {answer.hit.score:.3f})", dim=True)
    return f"{header}  {score}\n{_quoted_passage(answer)}\n"


def _quoted_passage(answer: Answer) -> str:
    """The passage wrapped to the terminal, with the answering sentence styled bold."""
    text = answer.hit.passage.text
    width = min(shutil.get_terminal_size((100, 24)).columns, 100) - 4
    before, sentence, after = (
        text[: answer.sentence_start],
        answer.sentence,
        text[answer.sentence_end :],
    )
    # Wrap the plain text first, then style the sentence's words, so wrapping never splits a code.
    lines = textwrap.wrap(f"{before}\x00{sentence}\x01{after}", width=width)
    quoted = "\n".join(f"   │ {line}" for line in lines)
    bold_on, bold_off = _bold_codes()
    return quoted.replace("\x00", bold_on).replace("\x01", bold_off)


def _bold_codes() -> tuple[str, str]:
    styled = click.style("\x02", bold=True)
    on, _, off = styled.partition("\x02")
    return on, off


def answer_json(rank: int, answer: Answer) -> dict[str, Any]:
    """One answer as a JSON record (for `newsqa ask --json`)."""
    passage = answer.hit.passage
    return {
        "rank": rank,
        "score": round(answer.hit.score, 6),
        "passage_id": passage.id,
        "article_id": passage.article_id,
        "title": passage.title,
        "date": passage.date.isoformat() if passage.date else None,
        "source": passage.source,
        "url": passage.url,
        "text": passage.text,
        "answer_sentence": answer.sentence,
    }


def answer_json_line(rank: int, answer: Answer) -> str:
    """`answer_json` as one line of JSON."""
    return json.dumps(answer_json(rank, answer), ensure_ascii=False)
