"""Adding articles writes a small segment above the index; search reads the segments as one.

Every test compares an index grown by appends with the same articles built from scratch: the
dense results are the same (exact), BM25 the same order with scores within 2%, and everything
else `Index` answers (passages, articles, dates) the same by id.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bot import cli
from bot.cli import main
from bot.feeds import FEEDS_FILE, save_feeds
from embeddings.articles import Article
from embeddings.encoders.base import DEFAULT_MODEL
from embeddings.errors import IndexCorruptError
from embeddings.index.build import build_index
from embeddings.index.index import Index
from embeddings.index.layout import CURRENT, MAX_SEGMENTS, META, SEGMENTS, VECTORS
from embeddings.index.lexical import LexicalIndex, SegmentedLexical
from embeddings.search.searcher import Searcher
from testbed.fake_encoder import FakeEncoder

_WORDS = [
    f"{stem}{n}" for stem in ("river", "market", "school", "court", "storm") for n in range(40)
]


def _article(number: int) -> Article:
    """An article of three 20-word paragraphs, its words drawn by its number."""
    draw = random.Random(number)
    paragraphs = [" ".join(draw.choice(_WORDS) for _ in range(20)) for _ in range(3)]
    day = dt.date(2024, 1, 1) + dt.timedelta(days=number)
    return Article(f"a{number}", f"Story {number}", day, f"a{number}.txt", "\n\n".join(paragraphs))


def _articles(count: int, start: int = 0) -> list[Article]:
    return [_article(number) for number in range(start, start + count)]


def _grown(path: Path, base: int, steps: list[int], encoder: FakeEncoder) -> list[Article]:
    """An index of `base` articles, then one build per step adding that many more."""
    articles = _articles(base)
    build_index(articles, encoder, path)
    for added in steps:
        articles = [*articles, *_articles(added, len(articles))]
        build_index(articles, encoder, path)
    return articles


def _scratch(articles: list[Article], path: Path) -> Index:
    build_index(articles, FakeEncoder(), path)
    return Index.load(path)


def _ids(index: Index, rows: np.ndarray) -> list[str]:
    return [index.passage(int(row)).id for row in rows]


def _tiers(ids: list[str], scores: np.ndarray) -> list[set[str]]:
    """The ids grouped by equal score (within float32 rounding), best first, without the last
    group, which the cut at k may split: the fake encoder's bag-of-words vectors tie often,
    and a tie is broken by the last bit of a dot product."""
    tiers: list[tuple[float, set[str]]] = []
    for passage, score in zip(ids, scores, strict=True):
        if tiers and abs(tiers[-1][0] - score) < 1e-6:
            tiers[-1][1].add(passage)
        else:
            tiers.append((float(score), {passage}))
    return [group for _, group in tiers[:-1]]


def test_adding_articles_writes_one_segment_and_leaves_the_base_untouched(tmp_path: Path) -> None:
    """An additive build embeds only the new passages and hard-links the base's files: same
    inodes, same modification times; the generation lists base and segment."""
    path = tmp_path / "index"
    build_index(_articles(20), FakeEncoder(), path)
    base = path / (path / CURRENT).read_text()
    before = {f.relative_to(base): f.stat() for f in base.rglob("*") if f.is_file()}
    encoder = FakeEncoder()
    report = build_index(_articles(21), encoder, path)
    index = Index.load(path)
    assert (report.embedded, report.reused, report.segments) == (3, 60, 2)
    assert encoder.embedded_passages == 3 and len(index) == 63
    assert [s.folder.name for s in index.segments if s.folder] == [base.name, index.generation]
    linked = path / index.generation / base.name
    for name, stat in before.items():
        assert (linked / name).stat().st_ino == stat.st_ino
        assert (linked / name).stat().st_mtime_ns == stat.st_mtime_ns
    meta = json.loads((path / index.generation / META).read_text())
    assert meta["version"] == 3 and [s["count"] for s in meta[SEGMENTS]] == [60, 3]


def test_dense_search_over_segments_equals_a_build_from_scratch(tmp_path: Path) -> None:
    """After several appends, the nearest passages and their cosines are exactly those of the
    same articles built in one go."""
    encoder = FakeEncoder()
    articles = _grown(tmp_path / "grown", 30, [1, 4, 2], encoder)
    grown, scratch = Index.load(tmp_path / "grown"), _scratch(articles, tmp_path / "scratch")
    assert len(grown.segments) == 4 and len(grown) == len(scratch)
    for number in (0, 17, 31, 36):
        query = encoder.encode_queries([_article(number).text.split("\n\n")[1]])[0]
        rows, scores = grown.nearest(query, 10)
        expected_rows, expected = scratch.nearest(query, 10)
        assert _tiers(_ids(grown, rows), scores) == _tiers(_ids(scratch, expected_rows), expected)
        assert np.allclose(scores, expected, atol=1e-6)
        assert np.allclose(grown.cosines(query, rows[::-1]), expected[::-1], atol=1e-6)


def test_bm25_over_segments_ranks_as_a_build_from_scratch_and_scores_within_two_percent(
    tmp_path: Path,
) -> None:
    """BM25 over a base and append segments uses corpus-wide document frequencies (idf exact)
    and average length. The base keeps its own average length until a merge, which moves its
    scores by less than b = 0.4 times the average's change: here the appends move the average
    passage length by 2% (far more than appending to a real archive does), so 2% holds every
    score with room. A clear-cut query ranks exactly as from scratch; results whose scratch
    scores are more than 2% apart come in the same order."""
    encoder = FakeEncoder()
    articles = _grown(tmp_path / "grown", 12, [1, 2], encoder)
    articles.append(
        Article("clear", "Harbour", None, "clear.txt", "lighthouse keeper " * 20 + "storm3")
    )
    build_index(articles, encoder, tmp_path / "grown")
    grown, scratch = Index.load(tmp_path / "grown"), _scratch(articles, tmp_path / "scratch")
    assert len(grown.segments) == 4
    rows, scores = grown.lexical_nearest("lighthouse keeper", 3)
    expected_rows, expected = scratch.lexical_nearest("lighthouse keeper", 3)
    assert _ids(grown, rows) == _ids(scratch, expected_rows) == ["clear:0"]
    assert np.allclose(scores, expected, rtol=1e-6)  # an append segment's scores are exact
    for question in ("lighthouse keeper storm3", "river7 market3 school12", "court5 storm1"):
        rows, scores = grown.lexical_nearest(question, 10)
        expected_rows, expected = scratch.lexical_nearest(question, 10)
        ids, expected_ids = _ids(grown, rows), _ids(scratch, expected_rows)
        by_id = dict(zip(expected_ids, expected, strict=True))
        both = [n for n, passage in enumerate(ids) if passage in by_id]
        assert np.allclose(scores[both], [by_id[ids[n]] for n in both], rtol=0.02)
        clear = next((n for n in range(len(expected) - 1) if expected[n + 1] > 0.98 * expected[n]),
                     len(expected))  # fmt: skip
        assert ids[:clear] == expected_ids[:clear]
    terms = ["lighthous", "river7", "absent"]
    assert np.allclose(grown.idf(terms), scratch.idf(terms), rtol=1e-9)


def test_a_segment_scored_with_its_own_statistics_is_bm25s(tmp_path: Path) -> None:
    """Scored from its term frequencies with its own statistics, an append segment gives
    exactly the scores bm25s stored."""
    texts = [article.text for article in _articles(8)] + [""]
    lexical = LexicalIndex.build(texts, k1=0.9, b=0.4, frequencies=True)
    lexical.save(tmp_path / "bm25")
    loaded = LexicalIndex.load(tmp_path / "bm25")
    terms = loaded.tokenizer.question_terms("river3 storm12 court0 court0 nothing")
    corpus = SegmentedLexical([loaded]).corpus(terms)
    assert np.allclose(loaded.corpus_scores(terms, corpus), loaded.scores(" ".join(terms)))


def test_every_index_answer_over_segments_matches_a_build_from_scratch(tmp_path: Path) -> None:
    """Passages, articles, dates, article vectors, newest articles: the same by id."""
    articles = _grown(tmp_path / "grown", 10, [2, 3], FakeEncoder())
    grown, scratch = Index.load(tmp_path / "grown"), _scratch(articles, tmp_path / "scratch")
    assert (grown.article_count(), grown.date_range()) == (15, scratch.date_range())
    assert [e.id for e in grown.newest_articles(4)] == [e.id for e in scratch.newest_articles(4)]
    rows = np.arange(len(grown))
    numbers = grown.row_articles(rows)
    ids = [grown.entries[int(n)].id for n in numbers]
    assert ids == [grown.passage(int(row)).article_id for row in rows]
    dates = grown.article_dates(numbers[::7])
    by_id = {entry.id: number for number, entry in enumerate(scratch.entries)}
    expected = [scratch.article_dates(np.array([by_id[i]]))[0] for i in ids[::7]]
    assert list(dates) == expected
    for article_id in ("a0", "a11", "a14"):
        entry = grown.article(article_id)
        assert entry is not None
        assert grown.article_passages(article_id) == scratch.article_passages(article_id)
        number = np.array([grown.entries.index(entry)])
        same = scratch.article(article_id)
        other = np.array([scratch.entries.index(same)])  # type: ignore[arg-type]
        assert np.allclose(grown.article_vectors(number), scratch.article_vectors(other))
    assert list(grown.passages) == [grown.passage(row) for row in range(len(grown))]
    assert np.allclose(np.asarray(grown.vectors), np.asarray(grown.vectors[rows]))


def test_the_full_pipeline_answers_from_an_append_segment(tmp_path: Path) -> None:
    """The searcher over a segmented index finds an article that only the newest segment holds."""
    encoder = FakeEncoder()
    articles = _grown(tmp_path / "index", 10, [], encoder)
    news = Article("flood", "Flood", dt.date(2024, 6, 1), "f.txt", "The harbour wall broke.")
    build_index([*articles, news], encoder, tmp_path / "index")
    searcher = Searcher(Index.load(tmp_path / "index"), encoder)
    [hit] = searcher.rank(searcher.encode_question("Which harbour wall broke?"), 1)
    assert hit.passage.article_id == "flood"


@pytest.mark.parametrize(
    ("edit", "embedded"),
    [
        (lambda a: a[1:], 0),  # an article removed
        (lambda a: [*a[:-1], Article("a9", "Story 9", None, "a9.txt", "Rewritten.")], 1),
    ],
    ids=["removal", "change"],
)
def test_a_removal_or_change_merges_into_one_base_reusing_every_vector(
    tmp_path: Path, edit: Callable[[list[Article]], list[Article]], embedded: int
) -> None:
    """A build that is not purely additive writes one base segment; only changed passages are
    embedded, every other vector is reused from the segments."""
    path = tmp_path / "index"
    articles = _grown(path, 8, [1, 1], FakeEncoder())
    assert len(Index.load(path).segments) == 3
    encoder = FakeEncoder()
    report = build_index(edit(articles), encoder, path)
    index = Index.load(path)
    assert (report.segments, len(index.segments), encoder.embedded_passages) == (1, 1, embedded)
    scratch = _scratch(edit(articles), tmp_path / "scratch")
    assert list(index.passages) == list(scratch.passages)
    assert np.allclose(np.asarray(index.vectors), np.asarray(scratch.vectors))


def test_an_append_past_max_segments_merges(tmp_path: Path) -> None:
    """`MAX_SEGMENTS` segments at most: the build that would add one more merges them all into
    one base, embedding only the new article."""
    path = tmp_path / "index"
    articles = _grown(path, 5, [1] * (MAX_SEGMENTS - 1), FakeEncoder())
    assert len(Index.load(path).segments) == MAX_SEGMENTS
    encoder = FakeEncoder()
    report = build_index([*articles, _article(99)], encoder, path)
    assert (report.segments, encoder.embedded_passages) == (1, 3)
    assert len(Index.load(path).segments) == 1 and len(Index.load(path)) == 3 * len(articles) + 3


def test_merge_flag_rewrites_the_segments_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`newsqa index` adds new files as a segment; `newsqa index --merge` makes one base without
    embedding; `check` names the segments; --merge with --store is refused."""
    monkeypatch.setenv("NEWSQA_BACKEND", "torch")
    encoder = FakeEncoder(DEFAULT_MODEL)
    monkeypatch.setattr(cli, "make_encoder", lambda *args, **kwargs: encoder)
    data, path = tmp_path / "data", tmp_path / "index"
    data.mkdir()
    for number in range(3):
        (data / f"a{number}.txt").write_text(_article(number).text, encoding="utf-8")
    args = ["--data", str(data), "--index", str(path)]
    assert CliRunner().invoke(main, ["index", *args]).exit_code == 0
    (data / "a3.txt").write_text(_article(3).text, encoding="utf-8")
    result = CliRunner().invoke(main, ["index", *args])
    assert "2 segments" in result.output and len(Index.load(path).segments) == 2
    result = CliRunner().invoke(main, ["check", "--index", str(path)])
    assert "is whole: 8 passages" in result.output and "in 2 segments" in result.output
    embedded = encoder.embedded_passages
    result = CliRunner().invoke(main, ["index", "--merge", *args])
    assert result.exit_code == 0 and "0 embedded, 8 reused" in result.output
    assert len(Index.load(path).segments) == 1 and encoder.embedded_passages == embedded
    result = CliRunner().invoke(main, ["index", "--merge", *args])
    assert "is up to date" in result.output
    result = CliRunner().invoke(main, ["index", "--merge", "--store", "postgresql://x/y", *args])
    assert result.exit_code == 2 and "--merge applies to an index folder" in result.output


def _fail(*args: object, **kwargs: object) -> None:
    raise OSError("disk full")


@pytest.mark.parametrize(
    "step",
    [
        "embeddings.index.build._link_segment",
        "embeddings.index.lexical.LexicalIndex.save",
        "embeddings.index.build._write_segmented_meta",
        "embeddings.index.build._sync_tree",
    ],
)
def test_a_failure_while_writing_a_segment_leaves_the_previous_index_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """An error at any step of writing an append segment leaves CURRENT on the previous
    generation, which loads, verifies and answers; the next build completes and clears up."""
    path = tmp_path / "index"
    encoder = FakeEncoder()
    articles = _grown(path, 6, [1], encoder)
    before = (path / CURRENT).read_text()
    with monkeypatch.context() as patch:
        patch.setattr(step, _fail)
        with pytest.raises(OSError, match="disk full"):
            build_index([*articles, _article(50)], encoder, path)
    assert (path / CURRENT).read_text() == before
    index = Index.load(path, verify=True)
    assert len(index) == 21 and index.article("a50") is None
    query = encoder.encode_queries([_article(6).text])[0]
    assert index.passage(int(index.nearest(query, 1)[0][0])).article_id == "a6"
    build_index([*articles, _article(50)], encoder, path)
    assert Index.load(path).article("a50") is not None
    assert not [p for p in path.iterdir() if p.name.startswith(".build-")]


@pytest.mark.parametrize("merge", [False, True], ids=["append", "merge"])
def test_an_index_opened_before_a_build_stays_readable(tmp_path: Path, merge: bool) -> None:
    """A reader holding a segmented generation reads, verifies and searches all of it after
    the next build, an append or a merge (as before segments: the build keeps the generation
    it replaced)."""
    path = tmp_path / "index"
    encoder = FakeEncoder()
    articles = _grown(path, 6, [1], encoder)
    old = Index.load(path)
    expected = list(old.passages)
    build_index([*articles, _article(40)], encoder, path, merge=merge)
    assert len(Index.load(path).segments) == (1 if merge else 3)
    assert list(old.passages) == expected and len(old.entries) == 7
    assert old.article_passages("a6") == expected[-3:]
    old.verify()
    query = encoder.encode_queries([_article(6).text])[0]
    assert old.passage(int(old.nearest(query, 1)[0][0])).article_id == "a6"


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40
    path.write_bytes(bytes(data))


def test_check_verifies_every_segment_and_names_a_damaged_file(tmp_path: Path) -> None:
    """`newsqa check` reads every segment: a changed byte in an append segment's vectors, or a
    changed segment meta.json, is named; opening a segmented index maps, parses nothing."""
    path = tmp_path / "index"
    _grown(path, 6, [1], FakeEncoder(DEFAULT_MODEL))
    index = Index.load(path)
    assert isinstance(index.segments[1].vectors, np.memmap)
    assert all("entries" not in vars(segment.catalog) for segment in index.segments)
    newest = path / index.generation / index.generation
    _flip(newest / VECTORS)
    result = CliRunner().invoke(main, ["check", "--index", str(path)])
    assert result.exit_code == 1
    assert f"{index.generation}/vectors.npy does not match its checksum" in result.output
    meta = newest / META
    meta.write_text(meta.read_text().replace('"count": 3', '"count": 4'))
    with pytest.raises(IndexCorruptError, match=r"meta\.json does not match its checksum"):
        Index.load(path)


async def test_the_watcher_merges_many_segments_after_a_quiet_round(tmp_path: Path) -> None:
    """`newsqa watch` (and `run --watch`) merge an index of `MERGE_WHEN_IDLE` segments or more
    after a round of polling that added nothing, embedding nothing; fewer are left alone."""
    data, path = tmp_path / "data", tmp_path / "index"
    data.mkdir()
    save_feeds(data / FEEDS_FILE, [])
    encoder = FakeEncoder(DEFAULT_MODEL)
    settings = cli.WatchSettings(allow_private_fetch=False, fetch_timeout=1.0, interval=60.0)
    watcher = cli.make_watcher(data, path, None, encoder, settings)
    for number in range(cli.MERGE_WHEN_IDLE):
        await watcher.poll()
        assert len(Index.load(path).segments) == number if number else not path.exists()
        (data / f"a{number}.txt").write_text(_article(number).text, encoding="utf-8")
        cli.update_index(data, path, encoder, False)
    embedded = encoder.embedded_passages
    await watcher.poll()
    assert len(Index.load(path).segments) == 1 and encoder.embedded_passages == embedded
    await watcher.fetcher.aclose()


def test_the_multilingual_matrix_is_appended_and_searched_across_segments(tmp_path: Path) -> None:
    """With a multilingual encoder an append segment gets its second matrix too (of the new
    passages only); multilingual search reads every segment; dropping the model merges."""
    path, multilingual = tmp_path / "index", FakeEncoder("multi", dimension=32)
    build_index(_articles(6), FakeEncoder(), path, multilingual=multilingual)
    again = FakeEncoder("multi", dimension=32)
    build_index(_articles(7), FakeEncoder(), path, multilingual=again)
    index = Index.load(path)
    assert len(index.segments) == 2 and again.embedded_passages == 3
    assert index.multilingual is not None and index.multilingual.shape == (21, 32)
    assert index.meta["multilingual"] == {"model": "multi", "dimension": 32}
    query = again.encode_queries([_article(6).text])[0]
    rows, cosines = index.nearest(query, 3, multilingual=True)
    assert index.passage(int(rows[0])).article_id == "a6"
    assert np.allclose(index.cosines(query, rows, multilingual=True), cosines, atol=1e-6)
    report = build_index(_articles(7), FakeEncoder(), path)
    assert report.segments == 1 and Index.load(path).multilingual is None


def test_an_index_written_before_segments_takes_appends(tmp_path: Path) -> None:
    """A base without the BM25 passage lengths (written before segments) still takes an append
    segment: BM25 takes its average length from the segments that record theirs."""
    path = tmp_path / "index"
    articles = _articles(8)
    build_index(articles, FakeEncoder(), path)
    generation = path / (path / CURRENT).read_text()
    (generation / "bm25" / "lengths.npy").unlink()
    meta = json.loads((generation / META).read_text())
    del meta["sha256"]["bm25/lengths.npy"]
    (generation / META).write_text(json.dumps(meta))
    assert Index.load(path).lexical.lengths is None  # type: ignore[union-attr]
    build_index([*articles, _article(8)], FakeEncoder(), path)
    grown, scratch = Index.load(path, verify=True), _scratch(_articles(9), tmp_path / "scratch")
    rows, scores = grown.lexical_nearest("river7 storm3", 5)
    expected_rows, expected = scratch.lexical_nearest("river7 storm3", 5)
    assert _ids(grown, rows[:1]) == _ids(scratch, expected_rows[:1])
    assert np.allclose(scores[:1], expected[:1], rtol=0.02)
