"""The default ranking: dense and BM25 scores fused, checked against the question, in context.

A pure function of the question, the passages' texts and articles, and each passage's scores,
so it is measured (benchmarks/quality.py) exactly as the bot runs it. The steps:

1. **Fusion.** Each signal (the dense cosine, BM25, and optionally a second dense model) is
   min-max normalised over its own top `depth` passages (below that window it counts 0), then
   the signals are added with their weights. Normalised linear fusion beat reciprocal-rank
   fusion on both benchmarks' train splits.
2. **Answer type.** A question that asks *when*, *how many*, *who* or *where* gets a bonus on
   passages that contain a date, a number or a name that the question does not already contain:
   a passage that merely repeats the question cannot answer it.
3. **Article context.** A passage's score is blended with its article's score: the article's
   best passage, mixed with the question's cosine to the article's mean passage vector
   (the index's `article_vectors.npy`, computed from its matrix, no extra embedding). A passage
   of the article that is about the question then outranks a stray keyword match elsewhere.

Then `collapse_duplicates` drops wire copies, and `spread_articles` keeps one passage per article
in the first page's places unless a second passage of an article clearly outscores the next
article; after the first page, passages follow in score order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt

from embeddings.index.scan import top_rows

Scores = npt.NDArray[np.floating]
Rows = npt.NDArray[np.intp]


# The places that get one passage per article: the bot's first page. Spreading every place cost
# BBC-headline nDCG@10 0.759 -> 0.506 on the train split (a headline's article has ~5 relevant
# passages); spreading the first page only keeps 0.721 (benchmarks/results/quality.md).
SPREAD_PLACES = 3


@dataclass(frozen=True)
class RankingSettings:
    """The pipeline's parameters: the defaults are what `python -m benchmarks.quality --tune`
    picks on the train splits (TrecQA train, BBC headline odd-numbered articles)."""

    dense_weight: float = 0.5
    lexical_weight: float = 0.5
    # Weight of a second dense model (e.g. the multilingual matrix) when its scores are given.
    second_dense_weight: float = 0.0
    depth: int = 100  # normalisation window per signal
    answer_type_bonus: float = 0.5
    # The bonus is weighed for this many best fused passages (reading each one's text).
    answer_type_depth: int = 30
    article_weight: float = 0.7
    # Within the article's score: the share of the article-vector cosine (the rest: best passage).
    article_vector_weight: float = 0.3
    # The reranker reads this many of the best fused passages (after wire copies are dropped)
    # and adds `reranker_weight` times its relevance (a probability) to their scores.
    rerank_depth: int = 3
    reranker_weight: float = 1.5
    # The answer-type bonus on a sentence's reranker score, when choosing the bold sentence.
    sentence_answer_type_bonus: float = 0.5
    # The first `spread_places` hits show one passage per article (0: plain score order).
    spread_places: int = SPREAD_PLACES


DEFAULT_SETTINGS = RankingSettings()


@dataclass(frozen=True)
class Ranked:
    """A passage row and its pipeline score (comparable within one question only); `own` is
    the passage's score before its article's score was blended in."""

    row: int
    score: float
    own: float = 0.0


# --- 1. fusion ---------------------------------------------------------------------------------


def normalise(scores: Scores, depth: int) -> npt.NDArray[np.float64]:
    """Min-max over the best `depth` scores: the best is 1, the window's lowest 0, below it 0."""
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        return values
    depth = max(1, min(depth, values.size))
    floor = float(np.partition(values, values.size - depth)[values.size - depth])
    top = float(values.max())
    if top <= floor:
        return (values >= top).astype(np.float64) if top > 0 else np.zeros_like(values)
    return np.clip((values - floor) / (top - floor), 0.0, None)


def fuse(signals: Sequence[tuple[float, Scores]], depth: int) -> npt.NDArray[np.float64]:
    """The weighted sum of the normalised signals (weight, scores); zero weights are skipped."""
    used = [(weight, scores) for weight, scores in signals if weight]
    if not used:
        raise ValueError("fusion needs at least one signal with a weight")
    total = np.zeros(len(used[0][1]), dtype=np.float64)
    for weight, scores in used:
        total += weight * normalise(scores, depth)
    return total


# --- 2. answer type ------------------------------------------------------------------------------


class AnswerType(Enum):
    """What kind of thing a question asks for, when its wording says so."""

    DATE = "date"
    NUMBER = "number"
    NAME = "name"  # a person or a place: a capitalised word


_ASKS = [
    (AnswerType.DATE, r"(when|(in |on )?(what|which) (year|date|day|month|decade))\b"),
    (
        AnswerType.NUMBER,
        r"(how (much|many|far|long|old|big|tall|large|fast|high|often|deep|wide|heavy)|"
        r"what (percentage|percent|number|amount|proportion)|"
        r"what (is|was) the (population|price|cost|value|size|age|salary))\b",
    ),
    (
        AnswerType.NAME,
        r"(who|whom|whose|where|(in )?(what|which) (country|city|state|place|town|nation|"
        r"company|team|club|party|person|man|woman))\b",
    ),
]
_ASK_PATTERNS = [(kind, re.compile(pattern)) for kind, pattern in _ASKS]
_WORD = re.compile(r"[^\W_]+")
# Runs of word characters: a pattern `\bX\b` with X all word characters matches exactly the
# runs equal to X, so dates and number words are found by looking runs up in a set, which is
# several times faster than searching the text with a long case-insensitive alternation.
_RUN = re.compile(r"\w+")
_DIGIT = re.compile(r"\d")
_YEAR = re.compile(r"(?:1\d{3}|20\d{2})s?", re.IGNORECASE)
_DATE_WORDS_TEXT = (
    "january february march april may june july august september october november december "
    "monday tuesday wednesday thursday friday saturday sunday "
    "yesterday today tomorrow century decade ago"
)
_DATE_WORDS = frozenset(_DATE_WORDS_TEXT.split())
_NUMBER_WORDS_TEXT = (
    "one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty "
    "hundred thousand million billion dozen half"
)
_NUMBER_WORDS = frozenset(_NUMBER_WORDS_TEXT.split())
# A capitalised word that does not start a sentence. The capital comes first in the pattern so
# the regex engine jumps from capital to capital; the look-behinds then check what precedes it.
_NAME = re.compile(r"[A-Z](?<=\b[A-Z])(?<!^[A-Z])(?<![.!?\"'\u201c]\s[A-Z])[\w'-]*[a-z][\w'-]*")


def answer_type(question: str) -> AnswerType | None:
    """The answer type the question's opening words ask for, or None."""
    opening = question.strip().lower()
    for kind, pattern in _ASK_PATTERNS:
        if pattern.match(opening):
            return kind
    return None


def offers_answer(text: str, kind: AnswerType, question_words: frozenset[str]) -> bool:
    """True when `text` holds a date / number / name of the asked kind not in the question."""
    return any(item.lower() not in question_words for item in _answers(text, kind))


def _answers(text: str, kind: AnswerType) -> Iterator[str]:
    """The dates / numbers / names in `text`, lazily: the first new one decides."""
    if kind is AnswerType.NAME:
        yield from (match.group(0) for match in _NAME.finditer(text))
        return
    for run in _RUN.findall(text):
        lower = run.lower()
        if kind is AnswerType.DATE:
            if lower in _DATE_WORDS or _YEAR.fullmatch(run):
                yield run
        elif lower in _NUMBER_WORDS:
            yield run
        elif _DIGIT.search(run):  # a word holding a digit ("_" splits words here)
            yield from (part for part in run.split("_") if _DIGIT.search(part))


def years_named(text: str) -> list[str]:
    """The years `text` names ("2008", "1990s"), as written."""
    return [run for run in _RUN.findall(text) if _YEAR.fullmatch(run)]


def answer_type_bonus(
    question: str, texts: Sequence[str], rows: Rows, bonus: float
) -> npt.NDArray[np.float64]:
    """`bonus` for each of `rows` whose text offers an answer of the question's type, else 0."""
    kind = answer_type(question)
    if kind is None or not bonus:
        return np.zeros(len(rows))
    words = frozenset(w.lower() for w in _WORD.findall(question))
    return np.array([bonus * offers_answer(texts[row], kind, words) for row in rows])


# --- 3. article context ------------------------------------------------------------------------


def article_context(
    scores: Scores,
    articles: Rows,
    weight: float,
    article_dense: Scores | None = None,
    vector_weight: float = 0.0,
    depth: int = 100,
) -> npt.NDArray[np.float64]:
    """Each score blended with its article's: ``(1 - w) * own + w * article``.

    `articles` holds a small integer per row (rows of one article share it). The article's
    score is its best passage's, or with `article_dense` (the question's cosine to each article
    vector) ``(1 - v) * best + v * normalised cosine`` for articles of more than one passage.
    """
    values = np.asarray(scores, dtype=np.float64)
    if not weight or values.size == 0:
        return values
    article = np.full(int(articles.max()) + 1, -np.inf)
    np.maximum.at(article, articles, values)
    if article_dense is not None and vector_weight:
        blended = (1.0 - vector_weight) * article + vector_weight * normalise(article_dense, depth)
        # A one-passage article's vector is its passage's: nothing to add to its own score.
        several = np.bincount(articles, minlength=article.size) > 1
        article = np.where(several, blended, article)
    return (1.0 - weight) * values + weight * article[articles]


# --- the pipeline ------------------------------------------------------------------------------


def rank(
    question: str,
    texts: Sequence[str],
    articles: Rows,
    dense: Scores,
    lexical: Scores,
    k: int,
    *,
    second_dense: Scores | None = None,
    article_dense: Scores | None = None,
    prior: Scores | None = None,
    settings: RankingSettings = DEFAULT_SETTINGS,
) -> list[Ranked]:
    """The best `k` passage rows for `question`, best first.

    `dense` and `lexical` hold every passage's cosine and BM25 score (row order of `texts`),
    `articles` an article number per row; optionally `second_dense` a second model's cosines
    and `article_dense` the question's cosine to each article's mean passage vector;
    `prior` is added to the final scores (for example `dates.date_preference`).
    """
    if len(texts) == 0 or k <= 0:
        return []
    signals: list[tuple[float, Scores]] = [
        (settings.dense_weight, dense),
        (settings.lexical_weight, lexical),
    ]
    if second_dense is not None:
        signals.append((settings.second_dense_weight, second_dense))
    fused = fuse(signals, settings.depth)
    pool = top_rows(fused, settings.answer_type_depth)
    fused[pool] += answer_type_bonus(question, texts, pool, settings.answer_type_bonus)
    final = article_context(
        fused,
        articles,
        settings.article_weight,
        article_dense,
        settings.article_vector_weight,
        settings.depth,
    )
    if prior is not None:
        final = final + prior
        fused = fused + prior
    return [Ranked(int(row), float(final[row]), float(fused[row])) for row in top_rows(final, k)]


# --- presenting the ranking --------------------------------------------------------------------


def collapse_duplicates(
    ranked: Sequence[Ranked], texts: Sequence[str], similarity: float = 0.8
) -> list[Ranked]:
    """Drop a passage whose word 3-grams overlap a better one's by `similarity` (Jaccard) or more.

    Wire copies of one story, re-published with a changed word or two, then show once.
    """
    kept: list[Ranked] = []
    shingles: list[frozenset[int]] = []
    seen: set[int] = set()  # every kept passage's shingles: most passages share none of them
    for item in ranked:
        own = _shingles(texts[item.row])
        if own.isdisjoint(seen) or not any(_similar(own, other, similarity) for other in shingles):
            kept.append(item)
            shingles.append(own)
            seen |= own
    return kept


def _words(text: str) -> list[str]:
    """`_WORD.findall(text)`, faster: most whitespace-separated tokens are one word already."""
    words: list[str] = []
    for token in text.split():
        if token.isalnum():  # exactly the characters of [^\W_]
            words.append(token)
        else:
            words.extend(_WORD.findall(token))
    return words


def _similar(a: frozenset[int], b: frozenset[int], similarity: float) -> bool:
    """Whether the Jaccard overlap of `a` and `b` reaches `similarity`."""
    shared = len(a & b)
    return shared / (len(a) + len(b) - shared) >= similarity


def _shingles(text: str) -> frozenset[int]:
    """The hashes of the text's word 3-grams (ints: cheap to look up)."""
    words = _words(text.lower())
    if len(words) < 3:
        return frozenset({hash(tuple(words))})
    return frozenset(map(hash, zip(words, words[1:], words[2:], strict=False)))


def spread_articles(
    ranked: Sequence[Ranked],
    articles: Rows,
    k: int,
    margin: float = 0.1,
    places: int = SPREAD_PLACES,
) -> list[Ranked]:
    """Up to `k` passages: the first `places` one per article unless the scores say otherwise,
    the rest in score order.

    A further passage of an article already shown keeps its place only when its own score
    (without the article context it shares with its siblings) beats the best own score of an
    article not yet shown by more than `margin`; otherwise it waits until every article has
    had its turn.
    """
    head = _one_per_article(ranked, articles, min(k, places), margin)
    shown = {item.row for item in head}
    return (head + [item for item in ranked if item.row not in shown])[:k]


def _one_per_article(
    ranked: Sequence[Ranked], articles: Rows, k: int, margin: float
) -> list[Ranked]:
    shown: set[int] = set()
    chosen: list[Ranked] = []
    waiting: list[Ranked] = []
    remaining = list(ranked)
    while remaining and len(chosen) < k:
        item = remaining.pop(0)
        article = int(articles[item.row])
        if article not in shown:
            shown.add(article)
            chosen.append(item)
            continue
        rivals = [r.own for r in remaining if int(articles[r.row]) not in shown]
        if not rivals or item.own - max(rivals) > margin:
            chosen.append(item)
        else:
            waiting.append(item)
    return (chosen + waiting)[:k]
