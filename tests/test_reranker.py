"""The reranker shipped in the repository: loads offline, reads question and passage together,
chooses the answering passage and sentence, and decides whether the articles answer at all."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from embeddings.articles import read_articles
from embeddings.errors import RerankerLoadError
from embeddings.index.build import build_index
from embeddings.index.index import Index
from embeddings.passages import Passage
from embeddings.search.decision import Calibration, Evidence, Thresholds
from embeddings.search.ranking import RankingSettings
from embeddings.search.reranker import MANIFEST_FILE, RERANKER_FOLDER, Reranker
from embeddings.search.searcher import Searcher
from embeddings.sentences import sentence_spans
from testbed.fake_encoder import FakeEncoder

TITLE = "Budget Aston takes on Porsche"
PRICE = Passage(
    "aston:1", "aston", 1, TITLE, None, "aston.txt",
    "With a price tag under £80,000, the V8 Vantage is tens of thousands of pounds cheaper than "
    "existing Aston models. The Vantage is \"the most important car in the history of our "
    "company\", said Aston's chief executive.",
)  # fmt: skip
LAUNCH = Passage(
    "aston:2", "aston", 2, TITLE, None, "aston.txt",
    "First shown as a concept car at the 2003 North American International Auto Show in "
    "Detroit, the V8 Vantage will be available in the UK in late summer.",
)  # fmt: skip


@pytest.fixture(scope="module")
def reranker() -> Reranker:
    """The packaged reranker, from the repository's file (onnxruntime; no network, no torch)."""
    return Reranker()


def test_the_model_ships_in_the_repository() -> None:
    """The ONNX file, its tokenizer and its manifest (with the calibrated decision) are package
    data beside the code."""
    for name in ("model.onnx", "tokenizer.json", MANIFEST_FILE):
        assert (RERANKER_FOLDER / name).is_file()
    assert 0.0 < Reranker().calibration.threshold < 1.0


def test_the_passage_that_answers_ranks_first_and_its_sentence_is_chosen(
    reranker: Reranker,
) -> None:
    """For a price question, the paragraph with the price outscores its sibling that repeats
    the question's words, and its price sentence is the best."""
    question = "How much does Aston Martin's V8 Vantage cost?"
    price, launch = reranker.read(question, [LAUNCH, PRICE])[::-1]
    assert price.relevance > launch.relevance
    assert price.best_sentence == 0
    assert len(price.sentences) == len(sentence_spans(PRICE.text))


def test_a_reading_is_the_same_alone_or_in_a_batch(reranker: Reranker) -> None:
    """Padding inside a batch does not change a passage's scores."""
    question = "When will the V8 Vantage be on sale in the UK?"
    alone = reranker.read(question, [LAUNCH])[0]
    batched = reranker.read(question, [PRICE, LAUNCH, PRICE, PRICE, PRICE])[1]
    assert alone.relevance == pytest.approx(batched.relevance, abs=1e-3)
    assert alone.sentences == pytest.approx(batched.sentences, abs=1e-3)


def test_sentences_beyond_the_token_limit_score_minus_infinity(reranker: Reranker) -> None:
    """A passage longer than the model reads keeps one score per sentence; the unread tail
    can never be chosen."""
    long = Passage("x:0", "x", 0, "", None, "x.txt", " ".join(["The cup was won again."] * 80))
    [reading] = reranker.read("Who won the cup?", [long])
    assert len(reading.sentences) == 80
    assert math.isinf(reading.sentences[-1]) and not math.isinf(reading.sentences[0])


def test_nothing_to_read_reads_nothing(reranker: Reranker) -> None:
    """No passages, no readings (and no model call)."""
    assert reranker.read("Who won?", []) == []


def test_a_missing_or_foreign_model_folder_is_one_clear_error(tmp_path: Path) -> None:
    """A folder without the manifest, or with another format's, names the folder."""
    with pytest.raises(RerankerLoadError, match=str(tmp_path)):
        Reranker(tmp_path)
    shutil.copytree(RERANKER_FOLDER, tmp_path / "copy")
    (tmp_path / "copy" / MANIFEST_FILE).write_text('{"format": "other"}', encoding="utf-8")
    with pytest.raises(RerankerLoadError, match="copy"):
        Reranker(tmp_path / "copy")


def test_calibrated_confidence_rises_with_relevance_and_falls_with_missing_words() -> None:
    """The shipped decision weighs the evidence the way it should: a passage the reranker
    finds relevant raises the confidence; question words the article lacks lower it."""
    calibration = Reranker().calibration
    base = Evidence(relevance=0.0, cosine=0.5, missing=0.2, unmentioned_year=0.0)
    higher = calibration.confidence(Evidence(3.0, 0.5, 0.2))
    lower = calibration.confidence(Evidence(0.0, 0.5, 0.8))
    assert lower < calibration.confidence(base) < higher
    assert Calibration.from_json(calibration.to_json()) == calibration


def _seed_searcher(data_dir: Path, tmp_path: Path, **options: object) -> Searcher:
    """The seed article indexed with the fake encoder, searched with the real reranker."""
    encoder = FakeEncoder()
    build_index(read_articles(data_dir).articles, encoder, tmp_path / "index")
    return Searcher(Index.load(tmp_path / "index"), encoder, reranker=Reranker(), **options)  # type: ignore[arg-type]


def test_the_decision_is_the_calibrated_confidence_of_the_evidence_against_a_threshold(
    data_dir: Path, tmp_path: Path
) -> None:
    """`Results.answered` is the shipped calibration's confidence in the first hit's evidence,
    compared with `--min-confidence` (or the calibrated threshold when none is given)."""
    question = "Who held the press conference about the plenary session?"
    for minimum, answered in [(0.0, True), (1.0, False), (None, None)]:
        searcher = _seed_searcher(data_dir, tmp_path, thresholds=Thresholds(calibrated=minimum))
        results = searcher.search(searcher.encode_question(question), 3)
        assert results.evidence is not None and results.hits[0].reading is not None
        assert results.evidence.relevance == results.hits[0].reading.relevance
        calibration = Reranker().calibration
        assert results.confidence == pytest.approx(calibration.confidence(results.evidence))
        expected = results.confidence >= calibration.threshold if answered is None else answered
        assert results.answered is expected


def test_question_words_the_first_article_lacks_count_against_answering(
    data_dir: Path, tmp_path: Path
) -> None:
    """The evidence's `missing` share is 0 for a question in the article's words, and large for
    one about a salary and a year the article never mentions."""
    searcher = _seed_searcher(data_dir, tmp_path)
    held = searcher.search(searcher.encode_question("Which plenary session did Chongqing hold?"), 3)
    lacked = searcher.search(searcher.encode_question("What was Jiang Hui's salary in 2031?"), 3)
    assert held.evidence is not None and lacked.evidence is not None
    assert held.evidence.missing == 0.0 and lacked.evidence.missing > 0.4


def test_a_year_the_first_article_never_mentions_counts_against_answering(
    data_dir: Path, tmp_path: Path
) -> None:
    """A question naming a year that its article neither mentions nor is dated in asks about
    other times: the evidence marks it, and the shipped calibration lowers the confidence."""
    searcher = _seed_searcher(data_dir, tmp_path)
    found = {}
    for year in ["2023", "2031"]:
        question = f"Which plenary session did Chongqing hold in {year}?"
        found[year] = searcher.search(searcher.encode_question(question), 3)
    dated, later = found["2023"].evidence, found["2031"].evidence  # the article is of 2023-07-09
    assert dated is not None and later is not None
    assert (dated.unmentioned_year, later.unmentioned_year) == (0.0, 1.0)
    calibration = Reranker().calibration
    assert calibration.confidence(later) < calibration.confidence(
        replace(later, unmentioned_year=0.0)
    )


def test_the_first_page_is_read_once_and_a_later_page_when_asked(
    data_dir: Path, tmp_path: Path
) -> None:
    """The reranked hits carry their readings; `answers` reads only the hits that lack one,
    and every bold sentence is one of its passage's sentences."""
    searcher = _seed_searcher(data_dir, tmp_path, settings=RankingSettings(rerank_depth=2))
    query = searcher.encode_question("What are the seven capabilities?")
    hits = searcher.search(query, 7).hits
    assert [hit.reading is not None for hit in hits] == [True, True] + [False] * 5
    for answer in searcher.answers(query, hits):
        assert (answer.sentence_start, answer.sentence_end) in sentence_spans(
            answer.hit.passage.text
        )
