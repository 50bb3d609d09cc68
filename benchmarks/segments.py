"""Adding articles to a big index: seconds per addition, and question latency with segments open.

Run from the repository root; it prints the table and writes benchmarks/results/segments.md::

    .venv/bin/python -m benchmarks.segments                                  # 10k and 100k
    .venv/bin/python -m benchmarks.segments --sizes 10000,100000,1000000     # and 1M

Per size: synthetic articles of five passages with embedding-like vectors (benchmarks/store.py's
`synthetic_articles` and `SyntheticEncoder`, no model: the real model's embedding time would
hide the index's own cost, so it is given beside the table) are built into a base index. Then
1, 10 and 100 articles are added, one `build_index` each (each writes an append segment), then
single articles until `MAX_SEGMENTS` segments are open, then one more (which merges them all),
and, for comparison, the same index rewritten whole (`merge=True`: what every addition cost
before segments). After each step the index is opened afresh, and it and the index opened
before the step (still readable: a build keeps the generation it replaced) are asked the same
questions in turn (eight running words of passages spread over the base, encoded beforehand),
so both see the same load from the rest of the machine: the full search pipeline with the
reranker off, the median over every question after one warm-up pass.
BLAS runs on one thread: with another job on both cores, OpenBLAS's two threads wait for each
other and a 10,000-passage p50 swings between 4 and 9 ms, against a steady 1.3 ms on one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from threadpoolctl import threadpool_limits

from benchmarks.quality import CACHE
from benchmarks.reports import publish
from benchmarks.store import SyntheticEncoder, synthetic_articles
from embeddings.articles import Article
from embeddings.encoders.base import Encoder
from embeddings.index.build import BuildReport, build_index
from embeddings.index.index import Index
from embeddings.index.layout import MAX_SEGMENTS
from embeddings.search.searcher import Query, Searcher

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "segments.md"
QUESTIONS = 300
# The real model's embedding speed on this machine (benchmarks/results/speed.md, int8 ONNX,
# 2 cores): what each added passage costs on top of the table's seconds.
REAL_PASSAGES_PER_SECOND = 57.7
HEADER = (
    "| base passages | step | articles added | passages embedded | add (s) | segments open "
    "| open (ms) | question p50 before / after (ms) | after / before |"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every size asked for and write the report."""
    arguments = _arguments(argv)
    with threadpool_limits(1):
        rows = [row for size in arguments.sizes for row in _size(size, arguments.cache)]
    report = _report(rows, " ".join(["python -m benchmarks.segments", *(argv or sys.argv[1:])]))
    return publish(report, RESULTS, write=not arguments.no_write)


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=lambda text: [int(n) for n in text.split(",") if n],
        default=[10_000, 100_000], help="comma-separated base sizes in passages",
    )  # fmt: skip
    parser.add_argument("--cache", type=Path, default=CACHE, help="where the indexes are built")
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser.parse_args(argv)


class _Bench:
    """One base index being grown, and the questions asked of it after every step."""

    def __init__(self, size: int, folder: Path) -> None:
        self.encoder: Encoder = SyntheticEncoder()
        self.folder = folder
        self.articles = synthetic_articles(size)
        step = max(1, len(self.articles) // QUESTIONS)
        texts = [" ".join(a.text.split()[3:11]) for a in self.articles[::step]][:QUESTIONS]
        vectors = self.encoder.encode_queries(texts)
        self.queries = [
            Query(vector, text=text) for vector, text in zip(vectors, texts, strict=True)
        ]
        self.seed = 10

    def build(self, added: list[Article], *, merge: bool = False) -> tuple[BuildReport, float]:
        self.articles = [*self.articles, *added]
        started = time.perf_counter()
        report = build_index(self.articles, self.encoder, self.folder, merge=merge)
        return report, time.perf_counter() - started

    def new_articles(self, count: int) -> list[Article]:
        self.seed += 1
        return synthetic_articles(5 * count, seed=self.seed)

    def open(self) -> tuple[Index, float]:
        """The index as it is now, and the milliseconds it took to open."""
        started = time.perf_counter()
        index = Index.load(self.folder)
        return index, (time.perf_counter() - started) * 1e3

    def ask(self, before: Index, after: Index) -> tuple[float, float]:
        """The median milliseconds per question of each index, asked in turn."""
        searchers = [Searcher(before, self.encoder), Searcher(after, self.encoder)]
        seconds: list[list[float]] = [[], []]
        for warm in (True, False):  # warm-up: pages cached, as in a running bot
            for query in self.queries:
                for searcher, spent in zip(searchers, seconds, strict=True):
                    started = time.perf_counter()
                    searcher.search(query, 3)
                    if not warm:
                        spent.append(time.perf_counter() - started)
        return statistics.median(seconds[0]) * 1e3, statistics.median(seconds[1]) * 1e3


def _size(size: int, cache: Path) -> list[str]:
    folder = cache / f"index-segments-{size}"
    shutil.rmtree(folder, ignore_errors=True)
    bench = _Bench(size, folder)
    steps: list[tuple[str, int, bool]] = [("append", count, False) for count in (1, 10, 100)]
    steps += [(f"append up to {MAX_SEGMENTS} segments", 1, False)] * (MAX_SEGMENTS - 4)
    steps += [(f"append past {MAX_SEGMENTS}: merge", 1, False)]
    steps += [("rewrite whole (before segments)", 1, True)]
    report, seconds = bench.build([])
    before, opened = bench.open()
    rows = [_row(report, seconds, "base, from scratch", 0, opened, bench.ask(before, before))]
    for number, (step, count, merge) in enumerate(steps):
        report, seconds = bench.build(bench.new_articles(count), merge=merge)
        after, opened = bench.open()
        if "up to" not in step or number == MAX_SEGMENTS - 2:  # the last append of the run
            rows.append(_row(report, seconds, step, count, opened, bench.ask(before, after)))
        before = after
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def _row(
    report: BuildReport, seconds: float, step: str, added: int, opened: float,
    p50: tuple[float, float],
) -> str:  # fmt: skip
    base = report.passages - report.embedded if added else report.passages
    line = (
        f"| {base:,} | {step} | {added} | {report.embedded:,} | {seconds:.2f} "
        f"| {report.segments} | {opened:.0f} | {p50[0]:.2f} / {p50[1]:.2f} "
        f"| {p50[1] / p50[0]:.2f} |"
    )
    print(line, flush=True)
    return line


def _report(rows: list[str], command: str) -> str:
    real = 5 / REAL_PASSAGES_PER_SECOND
    return "\n".join([
        "# Adding articles to a big index\n",
        f"Generated by `{command}` ({os.cpu_count()} CPU cores; "
        "timings are wall-clock). Synthetic articles of five 60-word passages with "
        "embedding-like vectors from a **cheap fake encoder** (benchmarks/store.py's "
        "`SyntheticEncoder`), so *add (s)* is the index's own cost: reading the previous "
        "index's article records, splitting, the fake embedding, writing, linking, syncing and "
        f"switching. The real int8 ONNX model embeds {REAL_PASSAGES_PER_SECOND} passages/s on "
        f"these cores ([speed.md](speed.md)): add {real:.2f} s per five-passage article. Each "
        "step builds on the one above it; *base passages* are those there before the step. "
        "*Question p50*: the full search pipeline (dense + BM25 + ranking, reranker off, "
        f"k = 3, BLAS on one thread), median of {QUESTIONS} questions after a warm-up pass, "
        "asked in turn of the index opened before the step and the one opened after it, so "
        "both see the same load from the rest of the machine. The merge row's before / after "
        f"is the cost of {MAX_SEGMENTS} open segments against one of the same passages.\n",
        HEADER,
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
    ])  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
