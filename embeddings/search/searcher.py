"""Questions in, hits out: the default ranking pipeline over one index, and whether to answer.

For each question the index gives two shortlists, the `depth` passages nearest the question's
vector and the `depth` best by BM25; `ranking` fuses them (with the answer-type bonus, article
context and any date the question names) and drops wire copies. Every signal outside its own
shortlist counts 0 in the fusion, so ranking the union of the shortlists ranks exactly as
ranking every passage would. The reranker (`reranker`) then reads the question with the best
few passages; its relevance reorders them, and its sentence scores choose each quote's bold
sentence. The results are spread over articles, and `decision` says how sure the articles
answer the question at all.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import overload

import numpy as np
import numpy.typing as npt

from embeddings.encoders.base import Encoder, Vectors
from embeddings.errors import EmptyQuestionError
from embeddings.language import is_english
from embeddings.passages import Passage
from embeddings.search.dates import date_preference, date_window
from embeddings.search.decision import DEFAULT_THRESHOLDS, Evidence, Thresholds
from embeddings.search.ranking import (
    DEFAULT_SETTINGS,
    Ranked,
    RankingSettings,
    answer_type_bonus,
    collapse_duplicates,
    rank,
    spread_articles,
    years_named,
)
from embeddings.search.reranker import Reading, Reranker
from embeddings.sentences import sentence_spans
from embeddings.stores import SearchStore

Rows = npt.NDArray[np.intp]
Scores = npt.NDArray[np.float64]

# The ranked passages considered for wire copies and the spread over articles, per result.
_PER_RESULT = 2


@dataclass(frozen=True)
class Hit:
    """A passage found for a question: its score in the ranking (comparable within one
    question only, best first), its cosine similarity to the question, and the reranker's
    reading of it when the reranker read it."""

    passage: Passage
    score: float
    cosine: float = 0.0
    reading: Reading | None = None


@dataclass(frozen=True)
class Query:
    """A question, its vector, and whether the vector came from the multilingual model."""

    vector: Vectors
    multilingual: bool = False
    text: str = ""


# Without the reranker, a question whose first passage holds this share of its words (BM25
# terms) ...
WORDS_HELD = 0.75
# ... gets this much added to its cosine confidence: its nearest passage may be a little less
# close.
WORDS_HELD_BONUS = 0.05


@dataclass(frozen=True)
class Results:
    """The ranked hits for a question, how sure the articles answer it, and the decision.

    `confidence` is the calibrated probability that the first hit answers the question when
    the reranker read it (`embeddings.search.decision`); otherwise the best cosine over the whole
    index, plus `WORDS_HELD_BONUS` when the first passage holds at least `WORDS_HELD` of the
    question's words. `answered` is the confidence against its threshold: the one decision
    the bot, `newsqa ask` and `newsqa eval` all follow.
    """

    hits: list[Hit]
    confidence: float
    answered: bool = True
    evidence: Evidence | None = None  # what the calibrated confidence weighed


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
    """Answers questions from one index with one encoder (and the reranker, when given)."""

    def __init__(
        self,
        index: SearchStore,
        encoder: Encoder,
        multilingual: Encoder | None = None,
        *,
        reranker: Reranker | None = None,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
        settings: RankingSettings = DEFAULT_SETTINGS,
        today: Callable[[], dt.date] = dt.date.today,
    ):
        self.index = index
        self.encoder = encoder
        # Only usable when the index holds this model's second matrix.
        usable = multilingual is not None and index.multilingual_model == multilingual.name
        self.multilingual = multilingual if usable else None
        self.reranker = reranker
        self.thresholds = thresholds
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
        """The best `k` passages by the default pipeline, the question's confidence and the
        decision to answer."""
        with self.index.snapshot():
            return self._search(query, k)

    def _search(self, query: Query, k: int) -> Results:
        index, depth = self.index, self.settings.depth
        if len(index) == 0 or k <= 0:
            return Results([], 0.0, answered=False)
        dense_rows, dense_top = index.nearest(query.vector, depth, multilingual=query.multilingual)
        lexical_rows, lexical_top = index.lexical_nearest(query.text, depth)
        pool = np.union1d(dense_rows, lexical_rows)
        dense = self._pool_cosines(query, pool, dense_rows, dense_top)
        # Outside its shortlist BM25 counts 0 in the fusion, as every signal does.
        lexical = np.zeros(len(pool), dtype=np.float32)
        lexical[np.searchsorted(pool, lexical_rows)] = lexical_top
        texts = _PoolTexts(index, pool)
        numbers = index.row_articles(pool)
        articles, local = np.unique(numbers, return_inverse=True)
        wanted = max(_PER_RESULT * k, self.settings.rerank_depth)
        prior = self._date_prior(query.text, articles[local])
        ranked = rank(
            query.text,
            texts,
            local,
            dense,
            lexical,
            min(len(pool), wanted),
            article_dense=None if query.multilingual else self._article_cosines(query, articles),
            prior=prior,
            settings=self.settings,
        )
        candidates, readings = self._rerank(query, collapse_duplicates(ranked, texts), texts, prior)
        chosen = spread_articles(candidates, local, k, places=self.settings.spread_places)
        hits = [
            Hit(texts.passage(item.row), item.score, float(dense[item.row]), readings.get(item.row))
            for item in chosen
        ]
        best_cosine = float(dense_top[0]) if len(dense_top) else 0.0
        return self._decide(query, hits, best_cosine)

    def _rerank(
        self, query: Query, ranked: list[Ranked], texts: _PoolTexts, prior: Scores | None
    ) -> tuple[list[Ranked], dict[int, Reading]]:
        """The best `rerank_depth` passages read by the reranker and reordered by its relevance
        (added to their scores with `reranker_weight`, as is the date prior again, so a
        passage from outside the dates the question names stays behind); the rest follow as
        they were."""
        if not self._reads(query) or self.reranker is None:
            return ranked, {}
        head = ranked[: self.settings.rerank_depth]
        readings = self.reranker.read(query.text, [texts.passage(item.row) for item in head])
        penalty = prior if prior is not None else np.zeros(len(texts))
        lifted = []
        for item, reading in zip(head, readings, strict=True):
            gain = self.settings.reranker_weight * (_sigmoid(reading.relevance) + penalty[item.row])
            lifted.append(Ranked(item.row, item.score + gain, item.own + gain))
        lifted.sort(key=lambda item: -item.score)
        read = {item.row: reading for item, reading in zip(head, readings, strict=True)}
        return lifted + ranked[len(head) :], read

    def _reads(self, query: Query) -> bool:
        """Whether the reranker reads this question: it reads English, not the multilingual
        model's questions."""
        return self.reranker is not None and not query.multilingual

    def _decide(self, query: Query, hits: list[Hit], best_cosine: float) -> Results:
        """The confidence that the first hit answers the question, and the decision."""
        if not hits:
            return Results([], 0.0, answered=False)
        first = hits[0]
        if first.reading is None or self.reranker is None:
            confidence = best_cosine
            if self._words_held(query.text, first.passage) >= WORDS_HELD:
                confidence += WORDS_HELD_BONUS
            minimum = self.thresholds.multilingual if query.multilingual else self.thresholds.cosine
            return Results(hits, confidence, answered=confidence >= minimum)
        calibration = self.reranker.calibration
        held = self._article_terms(first)
        evidence = Evidence(
            first.reading.relevance,
            best_cosine,
            self._missing(query, held),
            self._unmentioned_year(query, held),
        )
        confidence = calibration.confidence(evidence)
        chosen = self.thresholds.calibrated
        minimum = calibration.threshold if chosen is None else chosen
        return Results(hits, confidence, confidence >= minimum, evidence)

    def _article_terms(self, hit: Hit) -> frozenset[str]:
        """The BM25 terms of the hit's whole article, with the year of its date: a story
        reports its own year's events even when its text never writes the year."""
        tokenizer = self.index.tokenizer
        passages = self.index.article_passages(hit.passage.article_id) or [hit.passage]
        dated = [str(hit.passage.date.year)] if hit.passage.date else []
        texts = [p.embedding_text for p in passages] + dated
        return frozenset(t for text in texts for t in tokenizer.passage_terms(text))

    def _missing(self, query: Query, held: frozenset[str]) -> float:
        """The IDF-weighted share of the question's terms that the article (`held`) lacks."""
        terms = sorted(set(self.index.tokenizer.question_terms(query.text)))
        if not terms:
            return 0.0
        weights = self.index.idf(terms)
        lacking = sum(w for term, w in zip(terms, weights, strict=True) if term not in held)
        return float(lacking / weights.sum()) if weights.sum() > 0 else 0.0

    def _unmentioned_year(self, query: Query, held: frozenset[str]) -> float:
        """1.0 when the question names a year that the article (`held`) never mentions."""
        years = self.index.tokenizer.passage_terms(" ".join(years_named(query.text)))
        return float(any(year not in held for year in years))

    def _words_held(self, question: str, passage: Passage) -> float:
        """The share of the question's BM25 terms that the passage (with its title) holds."""
        tokenizer = self.index.tokenizer
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
        return self.index.article_vectors(articles) @ query.vector

    def _date_prior(self, question: str, articles: Rows) -> npt.NDArray[np.float64] | None:
        """A penalty for passages outside the dates the question names (None if it names none)."""
        window = date_window(question, self.today())
        if window is None:
            return None
        ordinals = self.index.article_dates(articles)
        return date_preference(window, [dt.date.fromordinal(o) if o else None for o in ordinals])

    def answers(self, query: Query, hits: list[Hit]) -> list[Answer]:
        """The hits, each with the sentence in its passage that best answers the question.

        The reranker's sentence scores choose it (hits it has not read yet, such as a later
        page, are read now), with the answer-type bonus for a sentence holding what the
        question asks for (a date for "when", ...). Without the reranker, the sentence
        holding most of the question's rare words is chosen. No sentence is embedded.
        """
        if self._reads(query) and self.reranker is not None:
            unread = [hit for hit in hits if hit.reading is None]
            readings = dict(zip(
                map(id, unread), self.reranker.read(query.text, [h.passage for h in unread]),
                strict=True,
            ))  # fmt: skip
            hits = [replace(hit, reading=readings.get(id(hit), hit.reading)) for hit in hits]
        return [self._answer(query, hit) for hit in hits]

    def _answer(self, query: Query, hit: Hit) -> Answer:
        spans = sentence_spans(hit.passage.text)
        sentences = [hit.passage.text[a:b] for a, b in spans]
        if hit.reading is not None and len(hit.reading.sentences) == len(spans):
            scores = np.asarray(hit.reading.sentences, dtype=np.float64)
            bonus = self.settings.sentence_answer_type_bonus
        else:
            scores = self._words_in(query.text, sentences)
            bonus = self.settings.answer_type_bonus
        rows = np.arange(len(sentences))
        scores = scores + answer_type_bonus(query.text, sentences, rows, bonus)
        return Answer(hit, *spans[int(np.argmax(scores))])

    def _words_in(self, question: str, sentences: Sequence[str]) -> npt.NDArray[np.float64]:
        """The IDF-weighted share of the question's terms each sentence holds."""
        tokenizer = self.index.tokenizer
        terms = sorted(set(tokenizer.question_terms(question)))
        weights = self.index.idf(terms) if terms else np.zeros(0)
        total = float(weights.sum()) or 1.0
        return np.array([
            sum(w for t, w in zip(terms, weights, strict=True) if t in held) / total
            for held in (set(tokenizer.passage_terms(s)) for s in sentences)
        ])  # fmt: skip

    def _encoder(self, multilingual: bool) -> Encoder:
        return self.multilingual if multilingual and self.multilingual else self.encoder


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, value))))


class _PoolTexts(Sequence[str]):
    """The texts of a pool of passage rows, read from the store only when the ranking asks:
    most of the pool is ranked on its scores alone."""

    def __init__(self, store: SearchStore, rows: Rows) -> None:
        self._store = store
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
            self._read[position] = self._store.passage(int(self._rows[position]))
        return self._read[position]
