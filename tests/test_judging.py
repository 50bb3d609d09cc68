"""The evaluation engine on tiny corpora with the fake encoder, and `newsqa eval` end to end."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bot import cli
from bot.cli import main
from embeddings.articles import Article
from embeddings.evaluation.judging import (
    DEFAULT_PIPELINE,
    CachingEncoder,
    Method,
    answer_judgements,
    answer_report,
    evaluate,
    judge_by_article,
    open_index,
    passage_articles,
    passage_judgements,
    read_corpus,
)
from embeddings.evaluation.measures import JudgedPassage, JudgedQuestion
from embeddings.search.decision import Thresholds
from embeddings.search.ranking import DEFAULT_SETTINGS, Ranked, spread_articles
from embeddings.search.searcher import Query, Searcher
from testbed.fake_encoder import FakeEncoder

PASSAGES = [
    {"id": "p1", "text": "The river flooded the valley after days of heavy rain."},
    {"id": "p2", "text": "The football cup final ended in a draw after extra time."},
    {"id": "p3", "text": "The party congress elected a new chairman on Tuesday."},
    {"id": "p4", "text": "Heavy snow closed the mountain pass for a week."},
]
QUERIES = [
    {"id": "q1", "question": "river flooded valley rain", "relevant": {"p1": 2, "p4": 1}},
    {"id": "q2", "question": "football cup final", "relevant": {"p2": 1}},
    {"id": "q3", "question": "unjudged question", "relevant": {}},
]


def _jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def judged_files(tmp_path: Path) -> tuple[Path, Path]:
    """A format (a) set: four passages, two judged questions and one without judgements."""
    return _jsonl(tmp_path / "passages.jsonl", PASSAGES), _jsonl(tmp_path / "q.jsonl", QUERIES)  # type: ignore[arg-type]


def _fixed(ranking: list[str]) -> Method:
    return Method("fixed", lambda query, k: ranking[:k], baseline=False)


def test_metrics_are_exact_on_a_hand_made_ranking(
    judged_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """A fixed ranking scores exactly what the measures say by hand, averaged over the two
    judged questions only (the third has nothing relevant)."""
    judged = passage_judgements(*judged_files, FakeEncoder(), tmp_path / "index")
    searcher = Searcher(judged.index, FakeEncoder())
    ranking = ["p4:0", "p1:0", "p2:0"]  # q1: grade 1 then 2; q2: relevant at rank 3
    result = evaluate(searcher, judged.questions, variants=[_fixed(ranking)]).method("fixed")
    ideal = 2 + 1 / math.log2(3)
    q1_ndcg = (1 + 2 / math.log2(3)) / ideal
    q2_ndcg = 1 / math.log2(4)
    assert result.scores.questions == 2
    assert result.scores.hit_at_1 == pytest.approx(0.5)
    assert result.scores.mrr_at_10 == pytest.approx((1 + 1 / 3) / 2)
    assert result.scores.ndcg_at_10 == pytest.approx((q1_ndcg + q2_ndcg) / 2)
    assert not result.baseline


def test_every_method_runs_and_the_pipeline_finds_the_obvious_passage(
    judged_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """BM25, dense, RRF and the default pipeline are all measured, latency included."""
    judged = passage_judgements(*judged_files, FakeEncoder(), tmp_path / "index")
    evaluation = evaluate(Searcher(judged.index, FakeEncoder()), judged.questions)
    names = [m.name for m in evaluation.methods]
    assert names == ["BM25", "dense", "RRF hybrid k=60", DEFAULT_PIPELINE]
    assert [m.baseline for m in evaluation.methods] == [True, True, True, False]
    for method in evaluation.methods:
        assert method.scores.hit_at_1 == 1.0
        assert method.latency.p95_ms >= method.latency.p50_ms > 0
    assert len(evaluation.results) == len(evaluation.questions) == 3


def test_a_split_passage_keeps_its_grade_in_both_halves(tmp_path: Path) -> None:
    """Format (a): a passage too long for the model becomes two index passages, both graded."""
    long_text = " ".join(f"Sentence number {i} is about the long flood." for i in range(12))
    passages = [JudgedPassage("long", long_text, "Floods"), JudgedPassage("short", "Snow fell.")]
    encoder = FakeEncoder(max_tokens=40)
    index = open_index(passage_articles(passages), encoder, tmp_path / "index")
    question = JudgedQuestion("q", "long flood", {"long": 3})
    [judged] = judge_by_article(index, [question])
    halves = [p.id for p in index.article_passages("long")]
    assert len(halves) >= 2
    assert judged.relevant == dict.fromkeys(halves, 3)
    assert index.article_passages("long")[0].title == "Floods"


def test_answer_format_judges_index_passages_by_containment(tmp_path: Path) -> None:
    """Format (b): relevant passages are those holding the answer, however articles were cut;
    the first quote, the bold sentence, the answered share and the false answers (to a
    question marked "answer": null) come from the pipeline's own answer and decision."""
    corpus = _jsonl(
        tmp_path / "articles.jsonl",
        [
            {"id": "a", "title": "Flood", "text": "Rain fell.\n\nThe river rose by 3 metres."},
            {"id": "b", "title": "Cup", "text": "The cup final was won by Leeds on penalties."},
        ],
    )
    questions = _jsonl(
        tmp_path / "questions.jsonl",
        [
            {"question": "How much did the river rise?", "answer": "3 metres"},
            {"question": "Who won the cup final?", "answer": ["Leeds"]},
            {"question": "Who won the election?", "answer": None},
        ],
    )
    encoder = FakeEncoder()
    judged = answer_judgements(corpus, questions, encoder, tmp_path / "index")
    assert [q.relevant for q in judged.questions] == [{"articles#a:0": 1}, {"articles#b:0": 1}, {}]
    assert [q.answerable for q in judged.questions] == [True, True, False]
    for floor, answered in [(0.0, 1.0), (1.01, 0.0)]:
        searcher = Searcher(judged.index, encoder, thresholds=Thresholds(cosine=floor))
        report = answer_report(searcher, evaluate(searcher, judged.questions))
        assert (report.answerable, report.unanswerable) == (2, 1)
        assert (report.first_quote, report.first_page, report.bold_sentence) == (1.0, 1.0, 1.0)
        assert report.answered == report.false_answers == answered


def test_caching_encoder_embeds_a_text_once_across_index_folders(tmp_path: Path) -> None:
    """A second index folder of the same articles reuses the stored vectors, bit for bit."""
    fake = FakeEncoder()
    encoder = CachingEncoder(fake, tmp_path / "vectors")
    articles = [Article("a", "T", None, "a", "One paragraph of text here.\n\nAnother one.")]
    first = open_index(articles, encoder, tmp_path / "one")
    embedded = fake.embedded_passages
    second = open_index(articles, encoder, tmp_path / "two")
    assert fake.embedded_passages == embedded
    assert np.array_equal(np.asarray(first.vectors), np.asarray(second.vectors))
    assert encoder.encode_passages([]).shape[0] == 0


def test_a_damaged_stored_vector_is_embedded_again(tmp_path: Path) -> None:
    """A stored file that cannot be read is not an error: the text is embedded again."""
    fake = FakeEncoder()
    encoder = CachingEncoder(fake, tmp_path / "vectors")
    encoder.encode_passages(["some text"])
    for path in (tmp_path / "vectors").rglob("*.npy"):
        path.write_bytes(b"broken")
    assert encoder.encode_passages(["some text"]).shape == (1, fake.dimension)
    assert fake.embedded_passages == 2


def test_read_corpus_reads_one_jsonl_file_or_a_folder(tmp_path: Path) -> None:
    """A single .jsonl file is read alone, with the ids it would have inside a folder."""
    corpus = _jsonl(tmp_path / "news.jsonl", [{"id": 7, "title": "T", "text": "Body."}])
    (tmp_path / "other.txt").write_text("Other\n\nNot this one.", encoding="utf-8")
    assert [a.id for a in read_corpus(corpus)] == ["news#7"]
    assert len(read_corpus(tmp_path)) == 2


# --- the command -------------------------------------------------------------------------------


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """`newsqa eval` embeds with the fake encoder instead of loading (or exporting) the model."""
    monkeypatch.setenv("NEWSQA_BACKEND", "torch")
    monkeypatch.setattr(cli, "make_encoder", lambda *args, **kwargs: FakeEncoder())


def _eval(*args: str) -> tuple[int, str]:
    """`newsqa eval` without the reranker: these tests pin the evaluation, not the model."""
    result = CliRunner().invoke(main, ["eval", "--no-rerank", *args])
    return result.exit_code, result.output


@pytest.mark.usefixtures("fake_model")
def test_eval_prints_the_methods_side_by_side(
    judged_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """Format (a) files give one markdown row per method with the gain over the best baseline."""
    passages, queries = judged_files
    workdir = str(tmp_path / "work")
    code, output = _eval(
        "--passages", str(passages), "--queries", str(queries), "--workdir", workdir
    )
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0].startswith("| method | hit@1 | hit@5 | recall@10 | MRR@10 | nDCG@10 | p50 ms")
    assert lines[2].startswith("| BM25 (baseline) | 1.000 |")
    assert lines[5].startswith(f"| **{DEFAULT_PIPELINE}** |")
    assert "2 of 3 questions have a relevant passage." in output
    code, again = _eval(
        "--passages", str(passages), "--queries", str(queries), "--workdir", workdir
    )
    assert code == 0 and again.splitlines()[2].split("|")[:7] == lines[2].split("|")[:7]


@pytest.mark.usefixtures("fake_model")
def test_eval_on_answer_strings_reports_bold_sentences(tmp_path: Path) -> None:
    """Format (b) adds the bold-sentence share and the share answered at the minimum score."""
    articles = tmp_path / "articles"
    articles.mkdir()
    (articles / "flood.txt").write_text("Flood\n\nThe river rose by 3 metres.", encoding="utf-8")
    questions = _jsonl(tmp_path / "q.jsonl", [{"question": "river rose", "answer": "3 metres"}])
    code, output = _eval(
        "--articles", str(articles), "--questions", str(questions), "--workdir", str(tmp_path)
    )
    assert code == 0, output
    assert "| answerable | 1 | 100.0% | 100.0% | 100.0% |" in output
    assert "| unanswerable (answered: false answers) | 0 |" in output


BAD = [
    # (files to write, arguments, words of the one-line error)
    ({}, ["--passages", "{tmp}/missing.jsonl", "--queries", "{tmp}/q.jsonl"], "No judged-set file"),
    (
        {"q.jsonl": '{"relevant": {}}\n'},
        ["--passages", "{passages}", "--queries", "{tmp}/q.jsonl"],
        'line 1 needs "question" and "relevant"; fix it: format a is',
    ),
    (
        {"q.jsonl": '{"answer": "x"}\n'},
        ["--articles", "{passages}", "--questions", "{tmp}/q.jsonl"],
        'line 1 needs "question" and "answer"',
    ),
    ({}, ["--passages", "{passages}"], "Give either --passages and --queries"),
    (
        {"q.jsonl": '{"question": "q", "answer": "x"}\n'},
        ["--articles", "{tmp}/nowhere", "--questions", "{tmp}/q.jsonl"],
        "No articles folder or .jsonl file at",
    ),
]


@pytest.mark.usefixtures("fake_model")
@pytest.mark.parametrize(("files", "args", "message"), BAD)
def test_eval_bad_input_is_one_sentence_naming_the_fix(
    judged_files: tuple[Path, Path],
    tmp_path: Path,
    files: dict[str, str],
    args: list[str],
    message: str,
) -> None:
    """Missing files, lines without a question and half a format exit 1 with one line."""
    for name, content in files.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    places = {"tmp": tmp_path, "passages": judged_files[0]}
    code, output = _eval(*(arg.format(**places) for arg in args), "--workdir", str(tmp_path / "w"))
    assert code == 1
    assert message in output
    assert "Traceback" not in output
    assert output.strip().startswith("Error:") and len(output.strip().splitlines()) == 1


def test_eval_query_vectors_are_not_stored(tmp_path: Path) -> None:
    """Only passages are kept on disk: a question's encoding is part of its measured time."""
    encoder = CachingEncoder(FakeEncoder(), tmp_path / "vectors")
    query = Query(encoder.encode_queries(["a question"])[0], text="a question")
    assert query.vector.shape == (1024,)
    assert not (tmp_path / "vectors").exists()


def test_spread_covers_the_first_page_then_follows_the_scores() -> None:
    """One passage per article for the first `places` (the bot's first page), then score
    order: a second passage of the best article comes right after the first page, not after
    every other article has had its turn."""
    articles = np.array([0, 0, 0, 1, 2, 3])
    ranked = [Ranked(row, 1.0 - row / 100, 1.0 - row / 100) for row in range(6)]  # all close
    assert [r.row for r in spread_articles(ranked, articles, 6, places=3)] == [0, 3, 4, 1, 2, 5]
    every_place = spread_articles(ranked, articles, 6, places=sys.maxsize)
    assert [r.row for r in every_place] == [0, 3, 4, 5, 1, 2]


def test_the_searcher_spreads_as_its_settings_say(tmp_path: Path) -> None:
    """`spread_places` is a setting: 0 keeps plain score order (the benchmark's "without
    spread" row); the default shows another article's close passage before a second one of
    the first article."""
    rain = "Heavy rain flooded the valley villages and rain kept falling on the rain soaked fields"
    others = [
        Article(f"other{n}", f"Other {n}", None, f"other{n}.txt",
                f"The council voted on budget item {n} for the new school library and roads.")
        for n in range(6)
    ]  # fmt: skip
    articles = [
        Article("rain", "Rain", None, "rain.txt", f"{rain} all week.\n\n{rain} on Sunday."),
        Article("sun", "Sun", None, "sun.txt", f"{rain} until the sun came."),
        *others,
    ]
    index = open_index(articles, FakeEncoder(), tmp_path / "index")

    def first_two(places: int) -> list[str]:
        settings = replace(DEFAULT_SETTINGS, spread_places=places)
        searcher = Searcher(index, FakeEncoder(), settings=settings)
        question = searcher.encode_question("rain flooded the valley")
        return [hit.passage.article_id for hit in searcher.rank(question, 2)]

    assert first_two(0) == ["rain", "rain"]
    assert first_two(DEFAULT_SETTINGS.spread_places) == ["rain", "sun"]
