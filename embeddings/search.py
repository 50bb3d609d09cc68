"""Questions in, hits out: the default ranking pipeline over one index.

For each question the index gives two shortlists, the `depth` passages nearest the question's
vector and the `depth` best by BM25; `embeddings.ranking` fuses them (with the answer-type bonus,
article context and any date the question names), drops wire copies and spreads the results
over articles. Every signal outside its own shortlist counts 0 in the fusion, so ranking the
union of the shortlists ranks exactly as ranking every passage would.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import numpy.typing as npt

from embeddings.encoder import Encoder, Vectors
from embeddings.errors import EmptyQuestionError
from embeddings.index import Hit, Index
from embeddings.language import is_english
from embeddings.passages import Passage
from embeddings.ranking import (
    DEFAULT_SETTINGS,
    RankingSettings,
    answer_type_bonus,
    collapse_duplicates,
    date_preference,
    date_window,
    rank,
    spread_articles,
    top_rows,
)
from embeddings.sentences import split_sentences

Rows = npt.NDArray[np.intp]

# The ranked passages considered for wire copies and the spread over articles, per result.
_PER_RESULT = 2


@dataclass(frozen=True)
class Query:
    """A question, its vector, and whether the vector came from the multilingual model."""

    vector: Vectors
    multilingual: bool = False
    text: str = ""


# A question whose first passage holds this share of its words (BM25 terms) ...
WORDS_HELD = 0.75
# ... gets this much added to its confidence: its nearest passage may be a little less close.
WORDS_HELD_BONUS = 0.05


@dataclass(frozen=True)
class Results:
    """The ranked hits for a question, and how sure the articles answer it.

    `confidence` is the best cosine over the whole index, plus `WORDS_HELD_BONUS` when the first
    passage holds at least `WORDS_HELD` of the question's words: a question whose nearest
    passage is not close is not answered by the articles, whatever the ranking puts first, but
    a passage with nearly every word of the question is evidence the cosine alone misses
    (on the judged BBC questions the bonus answers no unanswerable question more).
    """

    hits: list[Hit]
    confidence: float


@dataclass(frozen=True)
class Answer:
    """A hit with the span of its passage text that best answers the question."""

    hit: Hit
    sentence_start: int
    sentence_end: int

    @property
    def sentence(self) -> str:
        """The answering sentence itself."""
        return self.hit.passage.text[self.sentence_start : self.sentence_end]


class Searcher:
    """Answers questions from one index with one encoder."""

    def __init__(
        self,
        index: Index,
        encoder: Encoder,
        multilingual: Encoder | None = None,
        *,
        settings: RankingSettings = DEFAULT_SETTINGS,
        today: Callable[[], dt.date] = dt.date.today,
    ):
        self.index = index
        self.encoder = encoder
        # Only usable when the index holds this model's second matrix.
        usable = multilingual is not None and index.multilingual_model == multilingual.name
        self.multilingual = multilingual if usable else None
        self.settings = settings
        self.today = today  # "last week" in a question is relative to this day

    def ask(self, question: str, k: int = 3) -> list[Answer]:
        """The best `k` passages for `question`, each with its answering sentence."""
        query = self.encode_question(question)
        return self.answers(query, self.rank(query, k))

    def encode_question(self, question: str) -> Query:
        """The question's query-side vector: from the multilingual model when the question is
        not in English and the index has that model's matrix. A question without words is an
        error."""
        if not any(char.isalnum() for char in question):
            raise EmptyQuestionError("The question has no words")
        text = question.strip()
        multilingual = self.multilingual is not None and not is_english(text)
        encoder = self._encoder(multilingual)
        return Query(encoder.encode_queries([text])[0], multilingual, text)

    def rank(self, query: Query, k: int) -> list[Hit]:
        """The best `k` passages, best first."""
        return self.search(query, k).hits

    def search(self, query: Query, k: int) -> Results:
        """The best `k` passages by the default pipeline, and the question's confidence."""
        index, depth = self.index, self.settings.depth
        if len(index) == 0 or k <= 0:
            return Results([], 0.0)
        dense_rows, dense_top = index.nearest(query.vector, depth, multilingual=query.multilingual)
        lexical_all = index.lexical.scores(query.text)
        lexical_rows = top_rows(lexical_all, depth)
        pool = np.union1d(dense_rows, lexical_rows[lexical_all[lexical_rows] > 0])
        dense = self._pool_cosines(query, pool, dense_rows, dense_top)
        texts = _PoolTexts(index.passages, pool)
        numbers = np.asarray(index.catalog.row_articles[pool], dtype=np.intp)
        articles, local = np.unique(numbers, return_inverse=True)
        ranked = rank(
            query.text,
            texts,
            local,
            dense,
            lexical_all[pool],
            min(len(pool), _PER_RESULT * k),
            article_dense=None if query.multilingual else self._article_cosines(query, articles),
            prior=self._date_prior(query.text, articles[local]),
            settings=self.settings,
        )
        chosen = spread_articles(collapse_duplicates(ranked, texts), local, k)
        hits = [Hit(texts.passage(item.row), float(dense[item.row])) for item in chosen]
        confidence = float(dense_top[0]) if len(dense_top) else 0.0
        if hits and self._words_held(query.text, hits[0].passage) >= WORDS_HELD:
            confidence += WORDS_HELD_BONUS
        return Results(hits, confidence)

    def _words_held(self, question: str, passage: Passage) -> float:
        """The share of the question's BM25 terms that the passage (with its title) holds."""
        tokenizer = self.index.lexical.tokenizer
        terms = set(tokenizer.question_terms(question))
        held = terms & set(tokenizer.passage_terms(passage.embedding_text))
        return len(held) / len(terms) if terms else 0.0

    def _pool_cosines(self, query: Query, pool: Rows, rows: Rows, cosines: Vectors) -> Vectors:
        """The cosines of the pool's rows: known for the dense shortlist, read for the rest."""
        dense = np.zeros(len(pool), dtype=np.float32)
        known = np.isin(pool, rows)
        dense[known] = cosines[np.argsort(rows)][np.searchsorted(np.sort(rows), pool[known])]
        if not known.all():
            multilingual = query.multilingual
            dense[~known] = self.index.cosines(
                query.vector, pool[~known], multilingual=multilingual
            )
        return dense

    def _article_cosines(self, query: Query, articles: Rows) -> Vectors:
        return np.asarray(self.index.catalog.vectors[articles]) @ query.vector

    def _date_prior(self, question: str, articles: Rows) -> npt.NDArray[np.float64] | None:
        """A penalty for passages outside the dates the question names (None if it names none)."""
        window = date_window(question, self.today())
        if window is None:
            return None
        ordinals = np.asarray(self.index.catalog.dates)[articles]
        return date_preference(window, [dt.date.fromordinal(o) if o else None for o in ordinals])

    def answers(self, query: Query, hits: list[Hit]) -> list[Answer]:
        """The hits, each with the sentence in its passage that best answers the question: the
        closest to it, with the ranking's answer-type bonus (a date for "when", ...)."""
        spans = [sentence_spans(hit.passage.text) for hit in hits]
        texts = [
            hit.passage.text[a:b] for hit, own in zip(hits, spans, strict=True) for a, b in own
        ]
        encoder = self._encoder(query.multilingual)
        scores = encoder.encode_passages(texts) @ query.vector if texts else np.zeros(0)
        scores = scores + answer_type_bonus(
            query.text, texts, np.arange(len(texts)), self.settings.answer_type_bonus
        )
        answers, offset = [], 0
        for hit, own in zip(hits, spans, strict=True):
            best = offset + int(np.argmax(scores[offset : offset + len(own)]))
            answers.append(Answer(hit, *own[best - offset]))
            offset += len(own)
        return answers

    def _encoder(self, multilingual: bool) -> Encoder:
        return self.multilingual if multilingual and self.multilingual else self.encoder


class _PoolTexts(Sequence[str]):
    """The texts of a pool of passage rows, read from the index only when the ranking asks:
    most of the pool is ranked on its scores alone."""

    def __init__(self, passages: Sequence[Passage], rows: Rows) -> None:
        self._passages = passages
        self._rows = rows
        self._read: dict[int, Passage] = {}

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, item: int) -> str: ...

    @overload
    def __getitem__(self, item: slice) -> list[str]: ...

    def __getitem__(self, item: int | slice) -> str | list[str]:
        if isinstance(item, slice):
            return [self.passage(i).text for i in range(*item.indices(len(self)))]
        return self.passage(item).text

    def passage(self, position: int) -> Passage:
        """The passage at `position` in the pool."""
        if position not in self._read:
            self._read[position] = self._passages[int(self._rows[position])]
        return self._read[position]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text` (the whole text if it has no sentence)."""
    spans, position = [], 0
    for sentence in split_sentences(text):
        start = text.find(sentence, position)
        spans.append((start, start + len(sentence)))
        position = start + len(sentence)
    return spans or [(0, len(text))]
