"""`newsqa eval`: a judged set measured by the baselines and the default pipeline, as markdown."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from embeddings import (
    DEFAULT_THRESHOLDS,
    Encoder,
    JudgedFilesError,
    Reranker,
    Searcher,
    Thresholds,
    build_in_database,
    location_of,
)
from embeddings.evaluation.judging import (
    DEFAULT_PIPELINE,
    PAGE,
    AnswerReport,
    CachingEncoder,
    Evaluation,
    Judged,
    MethodResult,
    answer_judgements,
    answer_report,
    evaluate,
    passage_judgements,
    pipeline,
)

COLUMNS = (
    "| method | hit@1 | hit@5 | recall@10 | MRR@10 | nDCG@10 | p50 ms | p95 ms | vs best baseline |"
)
ALIGN = "| --- |" + " ---: |" * 8
DATABASE_PIPELINE = f"{DEFAULT_PIPELINE}, PostgreSQL store"


@dataclass(frozen=True)
class JudgedFiles:
    """The files of a judged set: passages + queries (format a) or articles + questions (b)."""

    passages: Path | None = None
    queries: Path | None = None
    articles: Path | None = None
    questions: Path | None = None

    def judge(self, encoder: CachingEncoder, indexes: Path) -> Judged:
        """The judged set's index (built under `indexes`, one folder per corpus and model) and
        its questions; a set that is neither format, or both, is an error."""
        if self.passages and self.queries and not (self.articles or self.questions):
            where = indexes / _folder_name(self.passages, encoder.name)
            return passage_judgements(self.passages, self.queries, encoder, where)
        if self.articles and self.questions and not (self.passages or self.queries):
            where = indexes / _folder_name(self.articles, encoder.name)
            return answer_judgements(self.articles, self.questions, encoder, where)
        raise JudgedFilesError(
            "Give either --passages and --queries (format a) or --articles and --questions "
            "(format b)"
        )


def run(
    files: JudgedFiles,
    workdir: Path,
    model: Encoder,
    k: int,
    *,
    reranker: Reranker | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    store: str | None = None,
) -> str:
    """Build (or reuse) the judged set's index under `workdir`, measure it with the searcher
    the bot uses, and report. With `store`, the judged set is also built into that database
    and the default pipeline measured on it, as one more row."""
    encoder = CachingEncoder(model, workdir / "vectors")
    judged = files.judge(encoder, workdir / "indexes")
    searcher = Searcher(judged.index, encoder, reranker=reranker, thresholds=thresholds)
    variants = []
    if store is not None:
        build_in_database(judged.articles, encoder, store, only_these=True)
        database = location_of(workdir, store).open(encoder.name)
        on_database = Searcher(database, encoder, reranker=reranker, thresholds=thresholds)
        variants.append(pipeline(on_database, DATABASE_PIPELINE))
    evaluation = evaluate(searcher, judged.questions, k, variants=variants)
    if files.articles is None:
        return table(evaluation)
    return table(evaluation) + "\n" + answers_table(answer_report(searcher, evaluation))


def _folder_name(corpus: Path, model: str) -> str:
    """One index folder per corpus and model, so two judged sets never rebuild each other's."""
    key = f"{corpus.resolve()}\x00{model}"
    return f"{corpus.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def table(evaluation: Evaluation) -> str:
    """The methods' measures as a markdown table, each with its gain over the best baseline."""
    best = evaluation.best_baseline
    rows = [row(result, best) for result in evaluation.methods]
    judged = evaluation.methods[0].scores.questions if evaluation.methods else 0
    note = f"{judged} of {len(evaluation.questions)} questions have a relevant passage."
    return "\n".join([COLUMNS, ALIGN, *rows, "", note]) + "\n"


def row(result: MethodResult, best: MethodResult | None) -> str:
    """One method's line of the table."""
    s, t = result.scores, result.latency
    name = f"{result.name} (baseline)" if result.baseline else result.name
    name = f"**{name}**" if name == DEFAULT_PIPELINE else name
    cells = [s.hit_at_1, s.hit_at_5, s.recall_at_10, s.mrr_at_10, s.ndcg_at_10]
    measures = " | ".join(f"{value:.3f}" for value in cells)
    return f"| {name} | {measures} | {t.p50_ms:.1f} | {t.p95_ms:.1f} | {gain(result, best)} |"


def gain(result: MethodResult, best: MethodResult | None) -> str:
    """The relative nDCG@10 gain over `best`, as a signed percentage."""
    if best is None or best.scores.ndcg_at_10 <= 0:
        return ""
    return f"{result.scores.ndcg_at_10 / best.scores.ndcg_at_10 - 1:+.1%}"


def answers_table(report: AnswerReport) -> str:
    """Format (b): what the bot's users see, as a markdown table."""
    false_answers = "" if report.false_answers is None else f"{report.false_answers:.1%}"
    return "\n".join([
        f"| questions | count | first quote holds the answer | a first-page quote ({PAGE}) "
        "does | bold sentence does | answered |",
        "| --- |" + " ---: |" * 5,
        f"| answerable | {report.answerable} | {report.first_quote:.1%} | "
        f"{report.first_page:.1%} | {report.bold_sentence:.1%} | {report.answered:.1%} |",
        f"| unanswerable (answered: false answers) | {report.unanswerable} | | | | "
        f"{false_answers} |",
    ]) + "\n"  # fmt: skip
