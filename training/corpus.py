"""The BBC News index and the question files that training and calibration read."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from benchmarks.quality import CACHE, bbc_titled_index
from embeddings.encoders.backends import DEFAULT_BACKEND, make_encoder
from embeddings.encoders.base import DEFAULT_MODEL
from embeddings.evaluation.judging import CachingEncoder
from embeddings.search.searcher import Searcher


@dataclass(frozen=True)
class Question:
    """A question, its answer strings (none: the articles do not answer it) and the article
    it was written about."""

    id: str
    text: str
    answers: tuple[str, ...]
    article: str


def read_questions(path: Path) -> list[Question]:
    """The questions of a format (b) file with an "article" field."""
    questions = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            answer = record.get("answer")
            answers = () if answer is None else (answer,) if isinstance(answer, str) else answer
            questions.append(
                Question(
                    record["id"], record["question"], tuple(answers), record.get("article", "")
                )
            )
    return questions


@functools.cache
def bbc_searcher() -> Searcher:
    """The product's searcher (no reranker) over the BBC articles with their titles, built by
    `build_index` with the default encoder; its passage vectors are cached between runs."""
    encoder = CachingEncoder(
        make_encoder(DEFAULT_MODEL, DEFAULT_BACKEND, CACHE, export=True), CACHE / "vectors"
    )
    return Searcher(bbc_titled_index(encoder), encoder)
