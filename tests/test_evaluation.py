"""Judged sets and retrieval measures: hand-computed tables, tiny files, the BM25 wrapper."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from embeddings.errors import IndexCorruptError, JudgedSetError
from embeddings.evaluation.measures import (
    JudgedPassage,
    JudgedQuestion,
    abstention_at,
    choose_threshold,
    contains_answer,
    hit_at,
    judge_by_answer,
    latency,
    load_answer_questions,
    load_passage_set,
    ndcg_at,
    recall_at,
    reciprocal_rank_at,
    score_rankings,
)
from embeddings.index.lexical import LexicalIndex, Tokenizer


def _jsonl(path: Path, *records: object) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


RELEVANT = {"a": 1, "b": 1}


@pytest.mark.parametrize(
    ("ranking", "k", "hit", "recall", "rr", "ndcg"),
    [
        (["a", "b"], 10, 1.0, 1.0, 1.0, 1.0),
        (
            ["x", "a", "y", "b"],
            10,
            1.0,
            1.0,
            0.5,
            (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)),
        ),
        (["x", "a", "y", "b"], 1, 0.0, 0.0, 0.0, 0.0),
        (["x", "a", "y", "b"], 2, 1.0, 0.5, 0.5, (1 / math.log2(3)) / (1 + 1 / math.log2(3))),
        (["x", "y"], 10, 0.0, 0.0, 0.0, 0.0),
        ([], 10, 0.0, 0.0, 0.0, 0.0),
        (["a", "a", "a"], 10, 1.0, 0.5, 1.0, 1 / (1 + 1 / math.log2(3))),  # a repeat earns nothing
    ],
)
def test_measures_match_hand_computed_values(
    ranking: list[str], k: int, hit: float, recall: float, rr: float, ndcg: float
) -> None:
    """hit@k, recall@k, reciprocal rank and nDCG@k for two relevant passages, worked by hand."""
    assert hit_at(ranking, RELEVANT, k) == hit
    assert recall_at(ranking, RELEVANT, k) == pytest.approx(recall)
    assert reciprocal_rank_at(ranking, RELEVANT, k) == pytest.approx(rr)
    assert ndcg_at(ranking, RELEVANT, k) == pytest.approx(ndcg)


def test_ndcg_uses_grades_with_linear_gain() -> None:
    """A grade-2 passage ranked below a grade-1 one costs: (1 + 2/log2 3) / (2 + 1/log2 3)."""
    relevant = {"a": 2, "b": 1}
    assert ndcg_at(["a", "b"], relevant, 10) == pytest.approx(1.0)
    expected = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert ndcg_at(["b", "a"], relevant, 10) == pytest.approx(expected)


def test_ideal_ranking_is_cut_at_k() -> None:
    """With more relevant passages than k, a full top k of them scores 1."""
    relevant = {str(i): 1 for i in range(20)}
    assert ndcg_at([str(i) for i in range(10)], relevant, 10) == pytest.approx(1.0)


def test_score_rankings_averages_only_judged_questions() -> None:
    """Questions without a relevant passage are left out of every mean."""
    questions = [
        JudgedQuestion("1", "q1", {"a": 1}),
        JudgedQuestion("2", "q2", {"b": 1}),
        JudgedQuestion("3", "q3", {}),
    ]
    scores = score_rankings([["a"], ["x", "b"], ["a"]], questions)
    assert scores.questions == 2
    assert scores.hit_at_1 == pytest.approx(0.5)
    assert scores.hit_at_5 == pytest.approx(1.0)
    assert scores.mrr_at_10 == pytest.approx(0.75)
    assert scores.ndcg_at_10 == pytest.approx((1 + 1 / math.log2(3)) / 2)


def test_score_rankings_needs_one_ranking_per_question() -> None:
    """A length mismatch is a programming error, reported as such."""
    with pytest.raises(ValueError, match="1 rankings for 2 questions"):
        score_rankings([["a"]], [JudgedQuestion("1", "q", {"a": 1})] * 2)


def test_latency_percentiles_are_in_milliseconds() -> None:
    """p50 and p95 of per-question seconds, reported in ms (numpy's linear interpolation)."""
    result = latency([i / 1000 for i in range(1, 101)])
    assert (result.p50_ms, result.p95_ms) == (pytest.approx(50.5), pytest.approx(95.05))
    assert latency([]).p50_ms == 0.0


def test_passage_set_loads_passages_titles_and_grades(tmp_path: Path) -> None:
    """Format (a): passages with optional titles, queries with graded relevant ids."""
    passages = _jsonl(
        tmp_path / "passages.jsonl",
        {"id": "p1", "text": "Paris is the capital of France.", "title": "France"},
        {"id": 2, "text": "Berlin is in Germany."},
    )
    queries = _jsonl(
        tmp_path / "dev.queries.jsonl",
        {"id": "q1", "question": "Capital of France?", "relevant": {"p1": 2, "2": 0}},
        {"question": "Nothing?", "relevant": {}},
    )
    judged = load_passage_set(passages, queries)
    assert judged.name == "dev.queries"
    assert judged.passages[0] == JudgedPassage("p1", "Paris is the capital of France.", "France")
    assert judged.passages[1].id == "2"
    assert judged.questions[0].relevant == {"p1": 2}  # grade 0 is not relevant
    assert judged.questions[1].id == "2"  # no id: the line number
    assert [q.id for q in judged.judged] == ["q1"]


@pytest.mark.parametrize(
    ("passages", "queries", "message"),
    [
        ('{"id": "p1"}\n', "", 'needs an "id" and a non-empty "text"'),
        ('{"id": "p1", "text": "x"}\n{"id": "p1", "text": "y"}\n', "", "repeats the passage id"),
        ("not json\n", "", "is not JSON"),
        ("[1, 2]\n", "", "is not a JSON object"),
        ('{"id": "p1", "text": "x"}\n', '{"question": "q"}\n', 'needs "question" and "relevant"'),
        (
            '{"id": "p1", "text": "x"}\n',
            '{"question": "q", "relevant": {"p9": 1}}\n',
            "unknown passages",
        ),
        (
            '{"id": "p1", "text": "x"}\n',
            '{"question": "q", "relevant": {"p1": "yes"}}\n',
            "integers",
        ),
    ],
)
def test_bad_passage_sets_name_the_problem(
    tmp_path: Path, passages: str, queries: str, message: str
) -> None:
    """Each malformed file is a JudgedSetError saying what is wrong and where."""
    (tmp_path / "p.jsonl").write_text(passages, encoding="utf-8")
    (tmp_path / "q.jsonl").write_text(queries, encoding="utf-8")
    with pytest.raises(JudgedSetError, match=message):
        load_passage_set(tmp_path / "p.jsonl", tmp_path / "q.jsonl")


def test_missing_file_is_a_judged_set_error(tmp_path: Path) -> None:
    """A path that does not exist is named in the error."""
    with pytest.raises(JudgedSetError, match=r"missing\.jsonl"):
        load_passage_set(tmp_path / "missing.jsonl", tmp_path / "q.jsonl")


def test_answer_questions_are_judged_by_containment(tmp_path: Path) -> None:
    """Format (b): a passage is relevant when it contains the answer, case- and space-folded."""
    path = _jsonl(
        tmp_path / "questions.jsonl",
        {"id": "q1", "question": "Who won?", "answer": "Jane  DOE"},
        {"question": "When?", "answer": ["1989", "nineteen eighty-nine"]},
        {"question": "Unanswerable?", "answer": "Atlantis"},
    )
    passages = [
        JudgedPassage("p1", "The race was won by jane\ndoe in 1989."),
        JudgedPassage("p2", "In 19890 nobody raced."),
        JudgedPassage("p3", "Nineteen eighty-nine was a good year."),
    ]
    judged = judge_by_answer(load_answer_questions(path), passages, "tiny")
    assert [q.relevant for q in judged.questions] == [{"p1": 1}, {"p1": 1, "p3": 1}, {}]
    assert judged.questions[1].answers == ("1989", "nineteen eighty-nine")
    assert [q.id for q in judged.judged] == ["q1", "2"]


def test_an_answer_of_null_marks_a_question_the_articles_do_not_answer(tmp_path: Path) -> None:
    """Format (b): `"answer": null` loads as unanswerable, with nothing relevant to judge."""
    path = _jsonl(
        tmp_path / "questions.jsonl",
        {"question": "Who won?", "answer": "Jane Doe"},
        {"id": "u1", "question": "Who won in 2030?", "answer": None},
    )
    questions = load_answer_questions(path)
    assert [(q.id, q.answerable, q.answers) for q in questions] == [
        ("1", True, ("Jane Doe",)),
        ("u1", False, ()),
    ]
    judged = judge_by_answer(questions, [JudgedPassage("p1", "Jane Doe won.")])
    assert [q.relevant for q in judged.questions] == [{"p1": 1}, {}]


@pytest.mark.parametrize(
    "line",
    ['{"question": "q"}', '{"question": "q", "answer": ""}', '{"question": "q", "answer": []}',
     '{"question": 1, "answer": "a"}', '{"question": "q", "answer": [1]}'],
)  # fmt: skip
def test_answer_questions_need_a_question_and_an_answer(tmp_path: Path, line: str) -> None:
    """A format (b) line without a usable answer is rejected with the line number."""
    (tmp_path / "q.jsonl").write_text(line + "\n", encoding="utf-8")
    with pytest.raises(JudgedSetError, match="line 1 needs"):
        load_answer_questions(tmp_path / "q.jsonl")


@pytest.mark.parametrize(
    ("text", "answers", "expected"),
    [
        ("It cost $1.13bn.", ["$1.13bn"], True),
        ("It cost $1.13bn.", ["1.13"], False),
        ("In 19890.", ["1989"], False),
        ("Mr. Smith (R-Ohio) said", ["R-Ohio"], True),
        ("nothing here", ["x", "here"], True),
    ],
)
def test_contains_answer_matches_whole_words(text: str, answers: list[str], expected: bool) -> None:
    """Answers match as whole words where they begin or end with a letter or digit."""
    assert contains_answer(text, answers) is expected


def test_threshold_keeps_false_answers_under_the_limit() -> None:
    """One in ten unanswerable may pass: the cut sits midway above the second highest (0.45)
    and the lowest answerable score (0.5)."""
    answerable = [0.9, 0.8, 0.7, 0.6, 0.5]
    unanswerable = [0.1, 0.2, 0.3, 0.4, 0.45, 0.2, 0.2, 0.1, 0.1, 0.65]
    chosen = choose_threshold(answerable, unanswerable, max_false_answers=0.1)
    assert chosen.threshold == pytest.approx(0.475)
    assert chosen.false_answers == pytest.approx(0.1)
    assert chosen.answered == pytest.approx(1.0)
    assert abstention_at(0.75, answerable, unanswerable).answered == pytest.approx(0.4)


def test_threshold_gives_up_answerable_questions_to_meet_the_limit() -> None:
    """No false answers allowed: answerable scores below the top unanswerable one are lost."""
    chosen = choose_threshold([0.3, 0.6, 0.8], [0.5, 0.1], max_false_answers=0.0)
    assert chosen.threshold == pytest.approx(0.55)
    assert (chosen.answered, chosen.false_answers) == (pytest.approx(2 / 3), 0.0)
    assert choose_threshold([0.3], [0.5], max_false_answers=0.0).answered == 0.0


def test_threshold_without_unanswerable_questions_answers_everything() -> None:
    """No unanswerable questions: nothing to guard against, every question is answered."""
    assert choose_threshold([0.3, 0.6], []).answered == 1.0


# --- the BM25 wrapper ------------------------------------------------------------------------

TEXTS = [
    "The central bank raised interest rates again on Tuesday.",
    "Peugeot manufactures cars and scooters in France.",
    "Rain is expected in the north over the weekend.",
    "",
]


def test_bm25_ranks_the_matching_passage_first() -> None:
    """Stemming makes "manufacture" meet "manufactures"; question words do not count."""
    index = LexicalIndex.build(TEXTS)
    scores = index.scores("What does Peugeot manufacture?")
    assert scores.shape == (4,) and scores.dtype == np.float32
    assert int(np.argmax(scores)) == 1
    assert scores[0] == scores[2] == scores[3] == 0


@pytest.mark.parametrize("question", ["", "???", "What is the zzyzx?", "the of and"])
def test_bm25_question_without_known_terms_scores_zero(question: str) -> None:
    """No known term in the question: every passage scores 0, nothing raises."""
    assert not LexicalIndex.build(TEXTS).scores(question).any()


def test_bm25_on_an_empty_corpus_scores_nothing() -> None:
    """An index of no passages answers with an empty score vector."""
    assert LexicalIndex.build([""]).scores("rates").shape == (1,)
    assert LexicalIndex.build([]).scores("rates").shape == (0,)


def test_bm25_save_load_round_trip(tmp_path: Path) -> None:
    """A saved index is plain files and loads back with the same scores and tokeniser."""
    index = LexicalIndex.build(TEXTS, tokenizer=Tokenizer(stem=False, drop_question_words=False))
    index.save(tmp_path / "bm25")
    meta = json.loads((tmp_path / "bm25" / "lexical.json").read_text(encoding="utf-8"))
    assert meta["count"] == 4 and meta["tokenizer"] == {"stem": False, "drop_question_words": False}
    loaded = LexicalIndex.load(tmp_path / "bm25")
    assert loaded.tokenizer == index.tokenizer and len(loaded) == 4
    question = "interest rates in France"
    np.testing.assert_array_equal(loaded.scores(question), index.scores(question))


@pytest.mark.parametrize("damage", ["missing", "format", "count"])
def test_bm25_damaged_index_is_corrupt(tmp_path: Path, damage: str) -> None:
    """A missing file, an unknown format or a count mismatch is IndexCorruptError."""
    folder = tmp_path / "bm25"
    LexicalIndex.build(TEXTS).save(folder)
    meta_path = folder / "lexical.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if damage == "missing":
        (folder / "vocab.index.json").unlink()
    elif damage == "format":
        meta_path.write_text(json.dumps({**meta, "version": 99}), encoding="utf-8")
    else:
        meta_path.write_text(json.dumps({**meta, "count": 5}), encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="lexical index"):
        LexicalIndex.load(folder)


def test_tokenizer_drops_stop_and_question_words_and_stems() -> None:
    """Passages keep question words ("who" may be content); questions drop them."""
    tokenizer = Tokenizer()
    assert tokenizer.question_terms("Who manufactures the cars?") == ["manufactur", "car"]
    assert tokenizer.passage_terms("who manufactures the cars") == ["who", "manufactur", "car"]
    assert Tokenizer(stem=False).question_terms("Durst's group") == ["durst", "s", "group"]
