"""The index on disk: build, load, search, incremental rebuilds and damage detection."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from embeddings.articles import read_articles
from embeddings.errors import (
    IndexBusyError,
    IndexCorruptError,
    IndexNotFoundError,
    ModelMismatchError,
    NoArticlesError,
)
from embeddings.index.build import _build_lock, build_index
from embeddings.index.index import Index, current_generation
from embeddings.index.layout import CURRENT, VECTORS
from embeddings.index.scan import top_rows
from embeddings.search.searcher import WORDS_HELD_BONUS, Searcher
from testbed.articles import write_article
from testbed.fake_encoder import FakeEncoder


def _build(data_dir: Path, index_dir: Path, encoder: FakeEncoder) -> Index:
    build_index(read_articles(data_dir).articles, encoder, index_dir)
    return Index.load(index_dir, model=encoder.name)


def _add_articles(data_dir: Path) -> None:
    write_article(
        data_dir,
        "rain.txt",
        "Heavy rain floods the valley",
        "Heavy rain flooded the valley villages on Monday and roads were closed to traffic for days.",
        date="2024-05-02",
    )
    write_article(
        data_dir,
        "match.txt",
        "Local team wins the cup",
        "The local football team won the cup final after a penalty shootout in front of a packed stadium.",
        date="2024-06-10",
    )


def test_round_trip_keeps_vectors_passages_and_meta(
    data_dir: Path, tmp_path: Path, encoder: FakeEncoder
) -> None:
    """What a build writes loads back: normalised float32 rows, passages in order, meta."""
    index = _build(data_dir, tmp_path / "index", encoder)
    [article] = read_articles(data_dir).articles
    assert len(index) == len(article.paragraphs) == index.meta["count"]
    assert index.vectors.dtype == np.float32
    assert (
        index.vectors.shape
        == (len(index), encoder.dimension)
        == (index.meta["count"], index.meta["dimension"])
    )
    assert np.allclose(np.linalg.norm(index.vectors, axis=1), 1.0, atol=1e-5)
    assert isinstance(index.vectors, np.memmap)
    assert [p.text for p in index.passages] == article.paragraphs
    assert index.meta["model"] == encoder.name
    assert index.article(article.id).hash == article.content_hash  # type: ignore[union-attr]


def test_files_are_plain_numpy_and_json(
    data_dir: Path, tmp_path: Path, encoder: FakeEncoder
) -> None:
    """The matrix and passages are readable without this library."""
    _build(data_dir, tmp_path / "index", encoder)
    generation = tmp_path / "index" / (tmp_path / "index" / CURRENT).read_text()
    matrix = np.load(generation / VECTORS, allow_pickle=False)
    lines = (generation / "passages.jsonl").read_text().splitlines()
    meta = json.loads((generation / "meta.json").read_text())
    assert matrix.shape[0] == len(lines) == meta["count"]
    assert meta["format"] == "newsqa-index" and meta["version"] == 2


def test_search_returns_best_passage_first(
    data_dir: Path, tmp_path: Path, encoder: FakeEncoder
) -> None:
    """The passage sharing the question's words ranks first, scores descend."""
    _add_articles(data_dir)
    index = _build(data_dir, tmp_path / "index", encoder)
    hits = Searcher(index, encoder).rank(
        Searcher(index, encoder).encode_question("rain flooded the valley villages"), 3
    )
    assert hits[0].passage.article_id == "rain"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@pytest.mark.parametrize(("k", "expected"), [(0, 0), (1, 1), (3, 3), (7, 7), (100, 7)])
def test_top_k_is_clamped_to_the_corpus(
    data_dir: Path, tmp_path: Path, encoder: FakeEncoder, k: int, expected: int
) -> None:
    """Asking for more passages than exist returns them all; zero returns none."""
    index = _build(data_dir, tmp_path / "index", encoder)
    rows, cosines = index.nearest(encoder.encode_queries(["party"])[0], k)
    assert len(rows) == len(cosines) == expected


def test_top_k_orders_ties_by_row() -> None:
    """Equal scores come back in row order, so results are deterministic."""
    assert list(top_rows(np.array([0.5, 0.9, 0.5, 0.9], dtype=np.float32), 3)) == [1, 3, 0]


def test_unchanged_rebuild_embeds_nothing_and_writes_nothing(
    data_dir: Path, tmp_path: Path, encoder: FakeEncoder
) -> None:
    """A second build over the same articles embeds zero passages and keeps the generation."""
    articles = read_articles(data_dir).articles
    first = build_index(articles, encoder, tmp_path / "index")
    generation = current_generation(tmp_path / "index")
    again = FakeEncoder()
    second = build_index(articles, again, tmp_path / "index")
    assert (first.embedded, second.embedded, again.embedded_passages) == (7, 0, 0)
    assert not second.written and current_generation(tmp_path / "index") == generation


def test_touching_one_article_reembeds_only_its_passages(
    data_dir: Path, tmp_path: Path, encoder: FakeEncoder
) -> None:
    """Editing one article re-embeds its passages; the others' vectors are reused unchanged."""
    _add_articles(data_dir)
    before = _build(data_dir, tmp_path / "index", encoder)
    old_rows = {p.id: np.array(before.vectors[i]) for i, p in enumerate(before.passages)}
    write_article(
        data_dir,
        "match.txt",
        "Local team wins the cup",
        "The team lost the final in the rain after all.",
        date="2024-06-10",
    )
    again = FakeEncoder()
    report = build_index(read_articles(data_dir).articles, again, tmp_path / "index")
    after = Index.load(tmp_path / "index")
    assert (report.embedded, report.reused) == (1, 8)
    assert again.passage_batches == [
        ["Local team wins the cup\nThe team lost the final in the rain after all."]
    ]
    for i, passage in enumerate(after.passages):
        if passage.article_id != "match":
            assert np.array_equal(after.vectors[i], old_rows[passage.id])


def test_deleted_article_is_dropped(data_dir: Path, tmp_path: Path, encoder: FakeEncoder) -> None:
    """Removing an article file removes its passages on the next build, embedding nothing."""
    _add_articles(data_dir)
    _build(data_dir, tmp_path / "index", encoder)
    (data_dir / "rain.txt").unlink()
    again = FakeEncoder()
    report = build_index(read_articles(data_dir).articles, again, tmp_path / "index")
    index = Index.load(tmp_path / "index")
    assert (report.removed_articles, report.embedded, again.embedded_passages) == (1, 0, 0)
    assert index.article("rain") is None and all(p.article_id != "rain" for p in index.passages)
    assert index.article_passages("match")[0].article_id == "match"


def test_other_model_index_is_a_clear_error(
    data_dir: Path, tmp_path: Path, encoder: FakeEncoder
) -> None:
    """Loading with another model names both models."""
    _build(data_dir, tmp_path / "index", encoder)
    with pytest.raises(ModelMismatchError, match="built with 'fake-encoder', not 'other-model'"):
        Index.load(tmp_path / "index", model="other-model")


def test_build_with_another_model_reembeds_everything(
    data_dir: Path, tmp_path: Path, encoder: FakeEncoder
) -> None:
    """Vectors of one model are never mixed with another's."""
    _build(data_dir, tmp_path / "index", encoder)
    other = FakeEncoder("other-model", dimension=32)
    report = build_index(read_articles(data_dir).articles, other, tmp_path / "index")
    assert report.embedded == 7
    assert Index.load(tmp_path / "index", model="other-model").vectors.shape == (7, 32)


def test_missing_index_is_not_found(tmp_path: Path) -> None:
    """No index folder, or one without CURRENT, is `IndexNotFoundError`."""
    with pytest.raises(IndexNotFoundError, match="No index at"):
        Index.load(tmp_path / "nowhere")


def test_no_articles_is_an_error(tmp_path: Path, encoder: FakeEncoder) -> None:
    """Building from nothing is refused rather than writing an empty index."""
    with pytest.raises(NoArticlesError):
        build_index([], encoder, tmp_path / "index")


def _corrupt_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def _corrupt_garbage(path: Path) -> None:
    path.write_bytes(b"not a numpy file at all")


def _corrupt_shape(path: Path) -> None:
    np.save(path, np.zeros((3, 5), dtype=np.float32))


def _corrupt_dtype(path: Path) -> None:
    np.save(path, np.zeros((7, 64), dtype=np.float64))


@pytest.mark.parametrize(
    "damage", [_corrupt_truncate, _corrupt_garbage, _corrupt_shape, _corrupt_dtype]
)
def test_damaged_vectors_are_detected_at_open(
    data_dir: Path, tmp_path: Path, encoder: FakeEncoder, damage
) -> None:  # type: ignore[no-untyped-def]
    """A truncated, garbled or mis-shaped vectors.npy is `IndexCorruptError`, never wrong answers."""
    _build(data_dir, tmp_path / "index", encoder)
    damage(tmp_path / "index" / current_generation(tmp_path / "index") / VECTORS)  # type: ignore[operator]
    with pytest.raises(IndexCorruptError, match="is damaged"):
        Index.load(tmp_path / "index")


def test_damaged_index_is_rebuilt_from_scratch(
    data_dir: Path, tmp_path: Path, encoder: FakeEncoder
) -> None:
    """A build over a damaged index re-embeds everything and leaves a good index."""
    _build(data_dir, tmp_path / "index", encoder)
    _corrupt_garbage(tmp_path / "index" / str(current_generation(tmp_path / "index")) / VECTORS)
    report = build_index(read_articles(data_dir).articles, encoder, tmp_path / "index")
    assert report.embedded == 7 and len(Index.load(tmp_path / "index")) == 7


def test_leftovers_of_a_crashed_build_do_not_disturb_the_index(
    data_dir: Path, tmp_path: Path, encoder: FakeEncoder
) -> None:
    """A half-written staging folder is ignored by readers and cleaned by the next build."""
    index_dir = tmp_path / "index"
    _build(data_dir, index_dir, encoder)
    staging = index_dir / ".build-crashed"
    staging.mkdir()
    (staging / VECTORS).write_bytes(b"half")
    assert len(Index.load(index_dir)) == 7
    _add_articles(data_dir)
    build_index(read_articles(data_dir).articles, encoder, index_dir)
    assert not staging.exists() and len(Index.load(index_dir)) == 9


def test_a_second_concurrent_build_is_refused(
    data_dir: Path, tmp_path: Path, encoder: FakeEncoder
) -> None:
    """While one build holds the lock, another fails fast instead of racing it."""
    (tmp_path / "index").mkdir()
    with _build_lock(tmp_path / "index"), pytest.raises(IndexBusyError):
        build_index(read_articles(data_dir).articles, encoder, tmp_path / "index")


def test_passages_are_read_lazily_and_truncation_is_detected(
    data_dir: Path, tmp_path: Path, encoder: FakeEncoder
) -> None:
    """Passages parse on access (any row, slices, negatives); a cut passages file fails at open,
    even when the checksums are not verified (as for a large index)."""
    index = _build(data_dir, tmp_path / "index", encoder)
    assert index.passages[-1] == index.passages[6]
    assert [p.ordinal for p in index.passages[2:4]] == [2, 3]
    with pytest.raises(IndexError):
        index.passages[7]
    passages = tmp_path / "index" / str(current_generation(tmp_path / "index")) / "passages.jsonl"
    passages.write_bytes(passages.read_bytes()[:-10])
    with pytest.raises(IndexCorruptError, match=r"passages\.jsonl is"):
        Index.load(tmp_path / "index", verify=False)
    with pytest.raises(IndexCorruptError, match=r"passages\.jsonl does not match its checksum"):
        Index.load(tmp_path / "index")


def test_large_index_scan_finds_what_the_float_scan_finds(
    data_dir: Path, tmp_path: Path, encoder: FakeEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From `INT8_SCAN_ROWS` passages on, a build keeps an int8 copy of the matrix and search
    goes through it; hits and cosines are the exact float ones."""
    monkeypatch.setattr("embeddings.index.build.INT8_SCAN_ROWS", 0)
    _add_articles(data_dir)
    index = _build(data_dir, tmp_path / "index", encoder)
    assert index.codes is not None and index.codes.codes.shape == index.vectors.shape
    query = encoder.encode_queries(["rain flooded the valley villages"])[0]
    rows, scores = index.nearest(query, 5)
    exact = np.asarray(index.vectors) @ query
    assert list(rows) == list(top_rows(exact, 5)) and np.allclose(scores, exact[rows], atol=1e-6)
    assert np.allclose(index.cosines(query, rows[::-1]), exact[rows[::-1]], atol=1e-6)


def test_article_records_are_read_only_when_asked(
    data_dir: Path, tmp_path: Path, encoder: FakeEncoder
) -> None:
    """Opening an index parses no article record; the catalog answers by id, date and order."""
    _add_articles(data_dir)
    index = _build(data_dir, tmp_path / "index", encoder)
    assert "entries" not in vars(index.catalog)
    rain = index.article("rain")
    assert rain is not None and rain.title == "Heavy rain floods the valley"
    assert [p.article_id for p in index.article_passages("rain")] == ["rain"]
    assert index.article("missing") is None and index.article_passages("missing") == []
    first, last = index.catalog.date_range()
    assert (str(first), str(last)) == ("2023-07-09", "2024-06-10")
    assert [e.id for e in index.catalog.newest(2)] == ["match", "rain"]
    assert int(index.catalog.row_articles[rain.first]) == index.catalog.numbers["rain"]


def test_large_index_skips_checksums_at_open_but_check_reads_them(
    data_dir: Path, tmp_path: Path, encoder: FakeEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above `VERIFY_BYTES` an index opens without hashing its files (a million passages open
    in well under a second); `Index.verify` still finds a changed byte."""
    index = _build(data_dir, tmp_path / "index", encoder)
    generation = tmp_path / "index" / index.generation
    data = bytearray((generation / VECTORS).read_bytes())
    data[-5] ^= 0x40
    (generation / VECTORS).write_bytes(bytes(data))
    monkeypatch.setattr("embeddings.index.index.VERIFY_BYTES", 0)
    opened = Index.load(tmp_path / "index")
    with pytest.raises(IndexCorruptError, match=r"vectors\.npy does not match its checksum"):
        opened.verify()


def test_a_date_in_the_question_prefers_articles_from_then(
    data_dir: Path, tmp_path: Path, encoder: FakeEncoder
) -> None:
    """Two reports of the same kind of event: the month or relative week the question names
    picks the article from then; without a date, the closer wording wins."""
    for name, day, river in (("may", "2024-05-02", "Elbe"), ("june", "2024-06-20", "Rhine")):
        write_article(
            data_dir, f"{name}.txt", f"Floods on the {river}",
            f"Floods on the {river} closed the roads to the valley villages for three days.",
            date=day,
        )  # fmt: skip
    build_index(read_articles(data_dir).articles, encoder, tmp_path / "index")
    index = Index.load(tmp_path / "index")
    searcher = Searcher(index, encoder, today=lambda: dt.date(2024, 6, 26))

    def first(question: str) -> str:
        return searcher.rank(searcher.encode_question(question), 1)[0].passage.article_id

    assert first("Which roads did the Rhine floods close?") == "june"
    assert first("Which roads did the Rhine floods close in May 2024?") == "may"
    assert first("Which roads did the Elbe floods close last week?") == "june"


def test_confidence_is_the_nearest_cosine_plus_a_bonus_for_a_passage_holding_the_words(
    data_dir: Path, tmp_path: Path, encoder: FakeEncoder
) -> None:
    """A first passage holding 75% of the question's words adds `WORDS_HELD_BONUS` to the
    nearest passage's cosine; one holding fewer adds nothing."""
    _add_articles(data_dir)
    index = _build(data_dir, tmp_path / "index", encoder)
    searcher = Searcher(index, encoder)
    for question, bonus in [
        ("Which valley villages did the heavy rain flood?", WORDS_HELD_BONUS),
        ("Did volcano ash and lava reach the rain valley?", 0.0),
    ]:
        query = searcher.encode_question(question)
        nearest = float(index.nearest(query.vector, 1)[1][0])
        assert searcher.search(query, 3).confidence == pytest.approx(nearest + bonus)
