"""The default ranking: fusion, answer types, article context, duplicates and the article spread."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from embeddings.index.scan import top_rows
from embeddings.search.dates import date_preference, date_window
from embeddings.search.ranking import (
    AnswerType,
    Ranked,
    RankingSettings,
    answer_type,
    article_context,
    collapse_duplicates,
    fuse,
    normalise,
    offers_answer,
    rank,
    spread_articles,
)


def test_normalise_maps_the_window_to_0_1_and_clips_below() -> None:
    """Over the top 3 of 5 scores: best 1, third best 0, the two below it 0 too."""
    result = normalise(np.array([0.9, 0.5, 0.7, 0.1, 0.2]), depth=3)
    np.testing.assert_allclose(result, [1.0, 0.0, 0.5, 0.0, 0.0])


@pytest.mark.parametrize(
    ("scores", "expected"),
    [([], []), ([0.0, 0.0], [0.0, 0.0]), ([2.0, 2.0], [1.0, 1.0]), ([3.0], [1.0])],
)
def test_normalise_edge_cases(scores: list[float], expected: list[float]) -> None:
    """Empty, all-zero (a question no term matched) and constant score vectors."""
    np.testing.assert_allclose(normalise(np.array(scores), depth=100), expected)


def test_fuse_weights_normalised_signals_and_skips_zero_weights() -> None:
    """0.6 * dense + 0.4 * lexical after min-max; a zero-weight signal is ignored."""
    dense, lexical = np.array([1.0, 0.0, 0.5]), np.array([0.0, 10.0, 5.0])
    fused = fuse([(0.6, dense), (0.4, lexical), (0.0, np.ones(3))], depth=3)
    np.testing.assert_allclose(fused, [0.6, 0.4, 0.5])
    with pytest.raises(ValueError, match="at least one signal"):
        fuse([(0.0, dense)], depth=3)


def test_top_rows_best_first_ties_in_row_order_k_clamped() -> None:
    """k larger than the corpus returns every row; equal scores keep row order."""
    assert list(top_rows(np.array([0.1, 0.5, 0.5, 0.2]), 10)) == [1, 2, 3, 0]
    assert list(top_rows(np.array([0.1]), 0)) == []


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("When did Nixon visit China?", AnswerType.DATE),
        ("In what year was the railway built?", AnswerType.DATE),
        ("How many jobs is ABN Amro cutting?", AnswerType.NUMBER),
        ("What is the population of Lagos?", AnswerType.NUMBER),
        ("Who painted the Mona Lisa?", AnswerType.NAME),
        ("Where did John Peel die?", AnswerType.NAME),
        ("Which company makes the Vioxx painkiller?", AnswerType.NAME),
        ("What does Peugeot manufacture?", None),
        ("Ad sales boost Time Warner profit", None),
    ],
)
def test_answer_type_from_the_question_opening(question: str, kind: AnswerType | None) -> None:
    """The opening words decide the answer type; anything else has none."""
    assert answer_type(question) is kind


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("The railway was built in the 1980s.", AnswerType.DATE, True),
        ("The railway was built by the council.", AnswerType.DATE, False),
        ("The bank will cut 2,850 jobs.", AnswerType.NUMBER, True),
        ("The bank will cut jobs.", AnswerType.NUMBER, False),
        ("The syndrome was described by Gilles de la Tourette.", AnswerType.NAME, True),
        ("Nixon went to China many times.", AnswerType.NAME, False),  # only the question's names
    ],
)
def test_offers_answer_needs_something_the_question_lacks(
    text: str, kind: AnswerType, expected: bool
) -> None:
    """A passage offers an answer when it has a date / number / name not in the question."""
    question_words = frozenset({"nixon", "china", "when", "did", "visit"})
    assert offers_answer(text, kind, question_words) is expected


def test_article_context_blends_each_score_with_its_articles_best() -> None:
    """(1 - w) * own + w * article best; the article vector mixes in for longer articles."""
    scores = np.array([0.9, 0.1, 0.5])
    articles = np.array([0, 0, 1])
    np.testing.assert_allclose(article_context(scores, articles, 0.5), [0.9, 0.5, 0.5])
    np.testing.assert_allclose(article_context(scores, articles, 0.0), scores)
    with_vectors = article_context(scores, articles, 0.5, np.array([0.2, 0.8]), 0.5)
    # article 0: 0.5 * 0.9 + 0.5 * 0 = 0.45; article 1 has one passage and keeps its 0.5
    np.testing.assert_allclose(with_vectors, [0.675, 0.275, 0.5])


TEXTS = [
    "Nixon visited China and met Mao.",  # repeats the question
    "Nixon visited China in February 1972.",  # holds the answer
    "Rain is expected over the weekend.",
]


def test_rank_prefers_the_passage_that_offers_the_asked_type() -> None:
    """Equal retrieval scores: the passage with a date wins a when-question."""
    dense = np.array([0.8, 0.8, 0.1], dtype=np.float32)
    lexical = np.array([3.0, 3.0, 0.0], dtype=np.float32)
    ranked = rank("When did Nixon visit China?", TEXTS, np.arange(3), dense, lexical, 2)
    assert [r.row for r in ranked] == [1, 0]
    assert ranked[0].score > ranked[1].score


@pytest.mark.parametrize("k", [0, -1])
def test_rank_with_nothing_to_return(k: int) -> None:
    """k of 0 or less, or an empty corpus, rank nothing."""
    empty = np.zeros(0, dtype=np.float32)
    assert rank("q", TEXTS, np.arange(3), np.ones(3), np.ones(3), k) == []
    assert rank("q", [], np.zeros(0, dtype=np.intp), empty, empty, 3) == []


def test_rank_uses_a_second_dense_model_when_weighted() -> None:
    """A second model's scores decide when the first two signals tie."""
    settings = RankingSettings(second_dense_weight=0.5, answer_type_bonus=0.0)
    flat = np.ones(3, dtype=np.float32)
    ranked = rank("q", TEXTS, np.arange(3), flat, flat, 1,
                  second_dense=np.array([0.1, 0.2, 0.9]), settings=settings)  # fmt: skip
    assert ranked[0].row == 2


def test_collapse_duplicates_keeps_the_first_wire_copy() -> None:
    """A near copy (one word changed) of a better passage is dropped; distinct ones stay."""
    texts = [
        "The central bank raised interest rates by a quarter point on Tuesday, citing inflation.",
        "The central bank raised interest rates by a quarter point on Tuesday, citing prices.",
        "The football team won the cup final after a penalty shootout.",
    ]
    ranked = [Ranked(0, 0.9), Ranked(1, 0.8), Ranked(2, 0.7)]
    assert [r.row for r in collapse_duplicates(ranked, texts)] == [0, 2]
    assert [r.row for r in collapse_duplicates(ranked, texts, similarity=1.0)] == [0, 1, 2]


def test_spread_articles_defers_a_second_passage_unless_clearly_better() -> None:
    """Article 0's second passage waits behind article 1 unless its own score (without the
    article context both its passages share) leads by the margin."""
    articles = np.array([0, 0, 1])
    close = [Ranked(0, 0.9, 0.9), Ranked(1, 0.85, 0.85), Ranked(2, 0.8, 0.8)]
    assert [r.row for r in spread_articles(close, articles, 3, margin=0.1)] == [0, 2, 1]
    clear = [Ranked(0, 0.9, 0.9), Ranked(1, 0.85, 0.85), Ranked(2, 0.5, 0.5)]
    assert [r.row for r in spread_articles(clear, articles, 3, margin=0.1)] == [0, 1, 2]
    assert [r.row for r in spread_articles(close, articles, 2, margin=0.1)] == [0, 2]
    # Lifted by its article's score only: it still waits.
    lifted = [Ranked(0, 0.9, 0.9), Ranked(1, 0.85, 0.3), Ranked(2, 0.5, 0.5)]
    assert [r.row for r in spread_articles(lifted, articles, 3, margin=0.1)] == [0, 2, 1]


TODAY = dt.date(2024, 3, 14)  # a Thursday


@pytest.mark.parametrize(
    ("question", "start", "end"),
    [
        ("What happened last week?", dt.date(2024, 3, 4), dt.date(2024, 3, 10)),
        ("Who won in July 2023?", dt.date(2023, 7, 1), dt.date(2023, 7, 31)),
        ("What was agreed in May?", dt.date(2023, 5, 1), dt.date(2023, 5, 31)),  # latest May
        ("What has changed since March?", dt.date(2024, 3, 1), None),
        ("Which firms failed since 2020?", dt.date(2020, 1, 1), None),
        ("What happened in 2022?", dt.date(2022, 1, 1), dt.date(2022, 12, 31)),
        ("Any news today?", TODAY, TODAY),
        ("What did he say yesterday?", dt.date(2024, 3, 13), dt.date(2024, 3, 13)),
        ("What happened last month?", dt.date(2024, 2, 1), dt.date(2024, 2, 29)),
        ("What happened this week?", dt.date(2024, 3, 11), TODAY),
        ("Deals in the past year?", dt.date(2023, 3, 14), TODAY),
        ("Profits in Sept. 2022?", dt.date(2022, 9, 1), dt.date(2022, 9, 30)),
    ],
)
def test_date_window_from_the_question(
    question: str, start: dt.date | None, end: dt.date | None
) -> None:
    """Relative and named dates become an inclusive window, relative to today."""
    window = date_window(question, TODAY)
    assert window is not None
    assert (window.start, window.end) == (start, end)


@pytest.mark.parametrize("question", ["Who cut 2,850 jobs?", "What may happen next?", ""])
def test_questions_without_dates_have_no_window(question: str) -> None:
    """Numbers that are not years after "in", and the modal "may", name no dates."""
    assert date_window(question, TODAY) is None


def test_date_preference_pushes_passages_outside_the_window_down() -> None:
    """Inside the window: 0; outside or undated: -penalty; no window: all 0."""
    window = date_window("What happened in July 2023?", TODAY)
    dates = [dt.date(2023, 7, 9), dt.date(2023, 8, 1), None]
    np.testing.assert_allclose(date_preference(window, dates), [0.0, -1.0, -1.0])
    np.testing.assert_allclose(date_preference(None, dates), [0.0, 0.0, 0.0])


def test_rank_adds_a_date_prior() -> None:
    """A passage dated outside the asked window drops below one inside it."""
    dense = np.array([0.9, 0.8, 0.1], dtype=np.float32)
    window = date_window("What did Nixon do in February 1972?", TODAY)
    dates = [dt.date(1973, 5, 1), dt.date(1972, 2, 21), None]
    ranked = rank("What did Nixon do in February 1972?", TEXTS, np.arange(3), dense, dense, 2,
                  prior=date_preference(window, dates))  # fmt: skip
    assert [r.row for r in ranked] == [1, 0]
