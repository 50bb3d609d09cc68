"""Answers rendered for a terminal: the `ask` and `chat` commands' output."""

from __future__ import annotations

import json
import shutil
import textwrap
from typing import Any

import click

from bot.messages import say
from embeddings import (
    Answer,
    Results,
    detect_language,
)


def answer_blocks(question: str, results: Results, answers: list[Answer]) -> str:
    """What the bot would reply: the answers, or its sentence for a question not answered."""
    if not results.answered or not answers:
        return say("not_found", detect_language(question)) + "\n"
    return "\n".join(answer_block(rank, answer) for rank, answer in enumerate(answers, start=1))


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


def results_json(question: str, results: Results, answers: list[Answer]) -> dict[str, Any]:
    """What the bot would do with `question`, as a JSON record (for `newsqa ask --json`):
    whether it answers, how sure it is, and every hit with its bold sentence."""
    return {
        "question": question,
        "answered": results.answered,
        "confidence": round(results.confidence, 6),
        "hits": [answer_json(rank, answer) for rank, answer in enumerate(answers, start=1)],
    }


def answer_json(rank: int, answer: Answer) -> dict[str, Any]:
    """One hit: its passage, the ranking's score, its cosine and its bold sentence."""
    hit, passage = answer.hit, answer.hit.passage
    return {
        "rank": rank,
        "score": round(hit.score, 6),
        "cosine": round(hit.cosine, 6),
        "passage_id": passage.id,
        "article_id": passage.article_id,
        "title": passage.title,
        "date": passage.date.isoformat() if passage.date else None,
        "source": passage.source,
        "url": passage.url,
        "text": passage.text,
        "sentence": answer.sentence,
    }


def results_json_line(question: str, results: Results, answers: list[Answer]) -> str:
    """`results_json` as one line of JSON."""
    return json.dumps(results_json(question, results, answers), ensure_ascii=False)
