"""End to end with the real packaged model: the seed article answers its question."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import main
from embeddings.articles import Article, read_articles
from embeddings.encoder import SentenceTransformerEncoder
from embeddings.passages import split_article
from tests.conftest import SEED_ARTICLE
from tests.conftest import SEED_QUESTION as QUESTION

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def seed_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The seed article indexed by `newsqa index` with the real model."""
    root = tmp_path_factory.mktemp("seed")
    (root / "data").mkdir()
    shutil.copy(SEED_ARTICLE, root / "data")
    result = CliRunner().invoke(
        main, ["index", "--data", str(root / "data"), "--index", str(root / "index")]
    )
    assert result.exit_code == 0, result.output
    return root / "data", root / "index"


def test_press_conference_question_quotes_jiang_hui_first(seed_index: tuple[Path, Path]) -> None:
    """`newsqa ask --json` puts the Jiang Hui paragraph first with its answering sentence."""
    _, index_dir = seed_index
    result = CliRunner().invoke(main, ["ask", "--json", QUESTION, "--index", str(index_dir)])
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.output.splitlines()]
    assert hits[0]["passage_id"] == "000_ff471cfb659f57e3:1"
    assert hits[0]["text"].startswith("Jiang Hui, member of the Standing Committee")
    assert "held a press conference on July 8" in hits[0]["answer_sentence"]
    assert hits[0]["date"] == "2023-07-09"
    assert len(hits) == 3 and hits[0]["score"] > hits[1]["score"]


def test_run_answers_in_the_terminal_without_a_token(seed_index: tuple[Path, Path]) -> None:
    """`newsqa run` with no bot token answers questions typed (here: piped) in the terminal."""
    data_dir, index_dir = seed_index
    result = CliRunner().invoke(
        main,
        ["run", "--data", str(data_dir), "--index", str(index_dir)],
        input=f"{QUESTION}\n",
        env={"TELEGRAM_BOT_TOKEN": ""},
    )
    assert result.exit_code == 0, result.output
    assert "is up to date: 1 articles, 7 passages" in result.output
    answer = result.output.split(f"? {QUESTION}", 1)[1]
    assert answer.lstrip().startswith("1. Chongqing Holds Third Plenary Session")
    assert "Jiang Hui" in answer.split("2. ")[0]


def test_real_tokenizer_limit_is_honoured_without_losing_words(
    real_encoder: SentenceTransformerEncoder,
) -> None:
    """A paragraph far over 256 tokens is split so every passage fits the model untruncated."""
    [seed] = read_articles(SEED_ARTICLE.parent).articles
    long_paragraph = " ".join(seed.paragraphs)  # ~600 tokens in one paragraph
    article = Article(id="x", title=seed.title, date=None, source="x.txt", text=long_paragraph)
    passages = split_article(article, real_encoder.count_tokens, real_encoder.max_tokens)
    assert len(passages) >= 3
    assert all(
        real_encoder.count_tokens(p.embedding_text) <= real_encoder.max_tokens for p in passages
    )
    assert " ".join(p.text for p in passages).split() == long_paragraph.split()


def test_real_vectors_are_normalised_float32(real_encoder: SentenceTransformerEncoder) -> None:
    """Passage and query vectors come out as unit-length float32 rows of the model's size."""
    passages = real_encoder.encode_passages(["One passage.", "Another one."])
    query = real_encoder.encode_queries(["a question"])
    assert passages.dtype == query.dtype == "float32"
    assert passages.shape == (2, 384) and query.shape == (1, 384)
    assert abs(float((passages**2).sum(axis=1)[0]) - 1.0) < 1e-5
