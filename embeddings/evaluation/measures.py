"""Judged question sets, and how well a ranking of passages answers them.

Two judged-set formats are read:

* **passage judgements** (format a): ``passages.jsonl`` with ``{"id", "text", "title"?}`` and
  ``queries.jsonl`` with ``{"id"?, "question", "relevant": {passage id: grade}}``, as in
  ``../shared/eval/trecqa/``;
* **answer strings** (format b): questions ``{"id"?, "question", "answer"}`` (``answer`` a string
  or a list of alternatives) over any corpus: a passage is relevant when it contains an answer,
  so any way of cutting articles into passages can be scored. ``"answer": null`` marks a
  question the articles do not answer: it measures the decision to answer.

The measures are the usual ones of ranked retrieval, each for one question and averaged over the
questions that have at least one relevant passage: hit@k, recall@k, MRR@k and nDCG@k with graded
relevance (linear gain, ``grade / log2(rank + 1)``, as trec_eval computes it).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from embeddings.errors import JudgedSetError


@dataclass(frozen=True)
class JudgedPassage:
    """A passage of a judged set: its id, its text and, when known, its article's title."""

    id: str
    text: str
    title: str | None = None


@dataclass(frozen=True)
class JudgedQuestion:
    """A question and its relevant passages (passage id -> grade above 0)."""

    id: str
    question: str
    relevant: Mapping[str, int] = field(default_factory=dict)
    answers: tuple[str, ...] = ()
    answerable: bool = True  # False: format (b) "answer": null, the articles do not answer it


@dataclass(frozen=True)
class JudgedSet:
    """Passages and the questions judged against them."""

    name: str
    passages: list[JudgedPassage]
    questions: list[JudgedQuestion]

    @property
    def judged(self) -> list[JudgedQuestion]:
        """The questions with at least one relevant passage (the others cannot be scored)."""
        return [q for q in self.questions if q.relevant]


@dataclass(frozen=True)
class Scores:
    """Mean measures over the scored questions."""

    questions: int
    hit_at_1: float
    hit_at_5: float
    recall_at_10: float
    mrr_at_10: float
    ndcg_at_10: float


@dataclass(frozen=True)
class Latency:
    """Per-question latency percentiles, in milliseconds."""

    p50_ms: float
    p95_ms: float


# --- loading ---------------------------------------------------------------------------------


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; anything else is `JudgedSetError`."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise JudgedSetError(f"Cannot read {path} ({error})") from error
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise JudgedSetError(f"{path} line {number} is not JSON ({error.msg})") from error
        if not isinstance(record, dict):
            raise JudgedSetError(f"{path} line {number} is not a JSON object")
        yield number, record


def load_passages(path: Path) -> list[JudgedPassage]:
    """The passages of a ``passages.jsonl`` file; ids must be unique."""
    passages: list[JudgedPassage] = []
    seen: set[str] = set()
    for number, record in read_jsonl(path):
        pid, text = record.get("id"), record.get("text")
        if not isinstance(pid, str | int) or not isinstance(text, str) or not text.strip():
            raise JudgedSetError(f'{path} line {number} needs an "id" and a non-empty "text"')
        if str(pid) in seen:
            raise JudgedSetError(f"{path} line {number} repeats the passage id {pid!r}")
        seen.add(str(pid))
        title = record.get("title")
        passages.append(JudgedPassage(str(pid), text, title if isinstance(title, str) else None))
    return passages


def load_judged_questions(path: Path, passage_ids: set[str]) -> list[JudgedQuestion]:
    """Format (a) questions: ``relevant`` maps known passage ids to integer grades."""
    questions: list[JudgedQuestion] = []
    for number, record in read_jsonl(path):
        question, relevant = record.get("question"), record.get("relevant")
        if not isinstance(question, str) or not isinstance(relevant, dict):
            raise JudgedSetError(f'{path} line {number} needs "question" and "relevant"')
        grades = {str(pid): grade for pid, grade in relevant.items()}
        if not all(isinstance(g, int) and not isinstance(g, bool) for g in grades.values()):
            raise JudgedSetError(f"{path} line {number}: grades must be integers")
        unknown = sorted(grades.keys() - passage_ids)
        if unknown:
            raise JudgedSetError(f"{path} line {number} judges unknown passages {unknown[:3]}")
        positive = {pid: grade for pid, grade in grades.items() if grade > 0}
        questions.append(JudgedQuestion(_question_id(record, number), question, positive))
    return questions


def load_passage_set(passages: Path, queries: Path, name: str = "") -> JudgedSet:
    """A format (a) judged set: ``passages.jsonl`` plus one ``queries.jsonl``."""
    judged_passages = load_passages(passages)
    ids = {p.id for p in judged_passages}
    return JudgedSet(name or queries.stem, judged_passages, load_judged_questions(queries, ids))


def load_answer_questions(path: Path) -> list[JudgedQuestion]:
    """Format (b) questions, not yet judged: each with one or more answer strings, or with
    ``"answer": null`` when the articles do not answer it."""
    questions: list[JudgedQuestion] = []
    for number, record in read_jsonl(path):
        question, answer = record.get("question"), record.get("answer")
        unanswerable = "answer" in record and answer is None
        answers = [] if unanswerable else [answer] if isinstance(answer, str) else answer
        if (
            not isinstance(question, str)
            or not question.strip()
            or not isinstance(answers, list)
            or not (answers or unanswerable)
            or not all(isinstance(a, str) and a.strip() for a in answers)
        ):
            raise JudgedSetError(
                f'{path} line {number} needs "question" and "answer" (a string, a list, or '
                "null for a question the articles do not answer)"
            )
        questions.append(
            JudgedQuestion(
                _question_id(record, number), question, answers=tuple(answers),
                answerable=not unanswerable,
            )
        )  # fmt: skip
    return questions


def judge_by_answer(
    questions: Iterable[JudgedQuestion], passages: Sequence[JudgedPassage], name: str = ""
) -> JudgedSet:
    """Format (b) judged: a passage is relevant (grade 1) when its text contains an answer."""
    folded = [fold(p.text) for p in passages]
    judged = []
    for question in questions:
        patterns = [answer_pattern(a) for a in question.answers]
        relevant = {
            p.id: 1
            for p, text in zip(passages, folded, strict=True)
            if any(pattern.search(text) for pattern in patterns)
        }
        judged.append(replace(question, relevant=relevant))
    return JudgedSet(name, list(passages), judged)


def fold(text: str) -> str:
    """Text compared case- and whitespace-insensitively."""
    return " ".join(text.casefold().split())


def answer_pattern(answer: str) -> re.Pattern[str]:
    """A folded answer as a whole-word match (``1989`` does not match ``19890``)."""
    folded = fold(answer)
    start = r"\b" if folded[:1].isalnum() else ""
    end = r"\b" if folded[-1:].isalnum() else ""
    return re.compile(start + re.escape(folded) + end)


def contains_answer(text: str, answers: Sequence[str]) -> bool:
    """True when `text` contains one of `answers` (folded, whole words)."""
    folded = fold(text)
    return any(answer_pattern(a).search(folded) for a in answers)


def _question_id(record: Mapping[str, Any], number: int) -> str:
    value = record.get("id")
    return (
        str(value) if isinstance(value, str | int) and not isinstance(value, bool) else str(number)
    )


# --- measures --------------------------------------------------------------------------------


def hit_at(ranking: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """1 when a relevant passage is among the first `k`, else 0."""
    return float(any(pid in relevant for pid in ranking[:k]))


def recall_at(ranking: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """The share of the relevant passages found among the first `k`."""
    if not relevant:
        return 0.0
    return len(set(ranking[:k]) & relevant.keys()) / len(relevant)


def reciprocal_rank_at(ranking: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """1 / the rank of the first relevant passage within the first `k`, else 0."""
    for rank, pid in enumerate(ranking[:k], start=1):
        if pid in relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at(ranking: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """Normalised discounted cumulative gain over the first `k` (linear gain, trec_eval)."""
    ideal = _dcg(sorted(relevant.values(), reverse=True)[:k])
    if ideal <= 0:
        return 0.0
    seen: set[str] = set()
    gains = []
    for pid in ranking[:k]:
        gains.append(relevant.get(pid, 0) if pid not in seen else 0)  # a repeat earns nothing
        seen.add(pid)
    return _dcg(gains) / ideal


def _dcg(gains: Sequence[int]) -> float:
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1))


def score_rankings(
    rankings: Sequence[Sequence[str]], questions: Sequence[JudgedQuestion]
) -> Scores:
    """Mean measures of `rankings` (passage ids, best first; one per question, in order).

    Questions without a relevant passage are left out of every mean.
    """
    if len(rankings) != len(questions):
        raise ValueError(f"{len(rankings)} rankings for {len(questions)} questions")
    pairs = [(r, q.relevant) for r, q in zip(rankings, questions, strict=True) if q.relevant]
    if not pairs:
        return Scores(0, 0.0, 0.0, 0.0, 0.0, 0.0)

    def mean(values: Iterable[float]) -> float:
        return float(np.mean(list(values)))

    return Scores(
        questions=len(pairs),
        hit_at_1=mean(hit_at(r, rel, 1) for r, rel in pairs),
        hit_at_5=mean(hit_at(r, rel, 5) for r, rel in pairs),
        recall_at_10=mean(recall_at(r, rel, 10) for r, rel in pairs),
        mrr_at_10=mean(reciprocal_rank_at(r, rel, 10) for r, rel in pairs),
        ndcg_at_10=mean(ndcg_at(r, rel, 10) for r, rel in pairs),
    )


def latency(seconds: Sequence[float]) -> Latency:
    """The median and 95th percentile of per-question times (given in seconds)."""
    if not seconds:
        return Latency(0.0, 0.0)
    p50, p95 = np.percentile(np.asarray(seconds, dtype=np.float64) * 1000.0, [50, 95])
    return Latency(float(p50), float(p95))


# --- answering or abstaining -----------------------------------------------------------------


@dataclass(frozen=True)
class Abstention:
    """How a "not in the articles" threshold does on answerable and unanswerable questions."""

    threshold: float
    answered: float  # share of answerable questions still answered
    false_answers: float  # share of unanswerable questions answered anyway


def abstention_at(
    threshold: float, answerable: Sequence[float], unanswerable: Sequence[float]
) -> Abstention:
    """The shares answered when a question is answered only if its top score >= `threshold`."""
    return Abstention(
        threshold, _share_at_least(answerable, threshold), _share_at_least(unanswerable, threshold)
    )


def choose_threshold(
    answerable: Sequence[float], unanswerable: Sequence[float], max_false_answers: float = 0.1
) -> Abstention:
    """The threshold that answers the most answerable questions with at most `max_false_answers`
    of the unanswerable ones answered, placed midway in the gap that allows it.

    Answering needs a score above the highest unanswerable score that must be refused; the
    threshold sits halfway between that score and the lowest answerable score above it, so a
    new question a little off either side is still judged the same way.
    """
    refused = sorted(unanswerable, reverse=True)
    allowed = math.floor(max_false_answers * len(refused) + 1e-9)
    if allowed >= len(refused):
        return abstention_at(min(answerable, default=0.0), answerable, unanswerable)
    highest_refused = refused[allowed]
    above = [score for score in answerable if score > highest_refused]
    if not above:
        threshold = float(np.nextafter(highest_refused, np.inf))
    else:
        threshold = (highest_refused + min(above)) / 2
    return abstention_at(threshold, answerable, unanswerable)


def _share_at_least(scores: Sequence[float], threshold: float) -> float:
    if not scores:
        return 0.0
    return float(np.mean(np.asarray(scores, dtype=np.float64) >= threshold))
