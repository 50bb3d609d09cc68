"""Judged questions run through the index the product searches, method by method.

The corpus of a judged set becomes articles, `build_index` turns them into an index (in a work
folder, so an unchanged set embeds nothing), and each question is encoded once and ranked four
ways side by side:

* **BM25**: Lucene's k1 1.2 and b 0.75 over the index's passages, every question word kept;
* **dense**: the passages nearest the question's vector (`Index.nearest`);
* **RRF hybrid**: reciprocal-rank fusion (k = 60) of those two rankings;
* **default pipeline**: `Searcher.search`, exactly as the bot ranks.

Relevance is keyed by the index's own passage ids. Passage judgements (format a) make each judged
passage a one-passage article, so an index passage earns the grade of its article (both halves of
a passage too long for the model keep it); answer strings (format b) judge every index passage by
whether it contains an answer.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embeddings.articles import Article, read_articles
from embeddings.encoders.base import Encoder, Vectors
from embeddings.errors import JudgedSetError
from embeddings.evaluation.measures import (
    JudgedPassage,
    JudgedQuestion,
    Latency,
    Scores,
    contains_answer,
    judge_by_answer,
    latency,
    load_answer_questions,
    load_passage_set,
    score_rankings,
)
from embeddings.index.build import build_index
from embeddings.index.index import Index
from embeddings.index.lexical import LUCENE_B, LUCENE_K1, LexicalIndex, Tokenizer
from embeddings.index.scan import top_rows
from embeddings.search.searcher import Hit, Query, Results, Searcher

RRF_CONSTANT = 60
_SLICE = 512  # passages embedded between two writes of the vector store
DEFAULT_PIPELINE = "default pipeline"


# --- embeddings kept by content ----------------------------------------------------------------


class CachingEncoder:
    """An encoder whose passage vectors are kept on disk, one ``.npy`` per text, keyed by the
    SHA-256 of the model name and the text: a text embedded once, for any index folder, is
    never embedded again. Questions are always encoded afresh (their time is measured)."""

    def __init__(self, encoder: Encoder, folder: Path) -> None:
        self.encoder = encoder
        self.folder = folder

    @property
    def name(self) -> str:
        """The wrapped model's name."""
        return self.encoder.name

    @property
    def max_tokens(self) -> int:
        """The wrapped model's input limit."""
        return self.encoder.max_tokens

    def count_tokens(self, text: str) -> int:
        """Tokens as the wrapped model counts them."""
        return self.encoder.count_tokens(text)

    def encode_passages(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        """Stored vectors where there are some; the rest embedded, then stored."""
        paths = [self._path(text) for text in texts]
        stored = [_load_vector(path) for path in paths]
        missing = [i for i, vector in enumerate(stored) if vector is None]
        if not texts:
            return self.encoder.encode_passages([], progress=progress)
        # In slices, so an interrupted run keeps what it has embedded so far.
        for start in range(0, len(missing), _SLICE):
            rows = missing[start : start + _SLICE]
            fresh = self.encoder.encode_passages([texts[i] for i in rows], progress=progress)
            for i, vector in zip(rows, fresh, strict=True):
                stored[i] = vector
                _save_vector(paths[i], vector)
        return np.stack([v for v in stored if v is not None]).astype(np.float32, copy=False)

    def encode_queries(self, texts: Sequence[str]) -> Vectors:
        """The wrapped model's question vectors (not stored)."""
        return self.encoder.encode_queries(texts)

    def _path(self, text: str) -> Path:
        digest = hashlib.sha256(f"{self.name}\x00{text}".encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.npy"


def _load_vector(path: Path) -> Vectors | None:
    try:
        vector: Vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError):  # not stored yet, or a write cut short: embed it again
        return None
    return vector


def _save_vector(path: Path, vector: Vectors) -> None:
    """Write through a temporary name, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{time.monotonic_ns()}.npy")
    np.save(partial, np.asarray(vector, dtype=np.float32), allow_pickle=False)
    partial.replace(path)


# --- corpora and relevance ---------------------------------------------------------------------


def passage_articles(passages: Sequence[JudgedPassage]) -> list[Article]:
    """Format (a): each judged passage as its own article (id = passage id)."""
    return [Article(p.id, p.title or "", None, p.id, p.text) for p in passages]


def read_corpus(path: Path) -> list[Article]:
    """The articles of a folder, or of one ``.jsonl`` file; none readable is an error."""
    if path.is_file():
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / path.name).symlink_to(path.resolve())
            articles = read_articles(Path(folder)).articles
    elif path.is_dir():
        articles = read_articles(path).articles
    else:
        raise JudgedSetError(f"No articles folder or .jsonl file at {path}")
    if not articles:
        raise JudgedSetError(f"No readable articles in {path}")
    return articles


@dataclass(frozen=True)
class Judged:
    """An index and questions judged against its passages, and the articles it holds."""

    index: Index
    questions: list[JudgedQuestion]
    articles: list[Article]


def passage_judgements(passages: Path, queries: Path, encoder: Encoder, workdir: Path) -> Judged:
    """Format (a) files as an index in `workdir` and questions judged by its passage ids."""
    judged = load_passage_set(_existing(passages), _existing(queries))
    articles = passage_articles(judged.passages)
    index = open_index(articles, encoder, workdir)
    return Judged(index, judge_by_article(index, judged.questions), articles)


def answer_judgements(articles: Path, questions: Path, encoder: Encoder, workdir: Path) -> Judged:
    """Format (b) files as an index in `workdir` and questions judged by answer containment."""
    asked = load_answer_questions(_existing(questions))
    corpus = read_corpus(articles)
    index = open_index(corpus, encoder, workdir)
    return Judged(index, judge_index_by_answer(index, asked), corpus)


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise JudgedSetError(f"No judged-set file at {path}")
    return path


def open_index(articles: Sequence[Article], encoder: Encoder, workdir: Path) -> Index:
    """The index of `articles` in `workdir`, built or brought up to date first."""
    build_index(articles, encoder, workdir)
    return Index.load(workdir, model=encoder.name)


def judge_by_article(index: Index, questions: Sequence[JudgedQuestion]) -> list[JudgedQuestion]:
    """Format (a): every index passage of a judged article gets the article's grade."""
    return [
        JudgedQuestion(
            q.id,
            q.question,
            {p.id: grade for aid, grade in q.relevant.items() for p in index.article_passages(aid)},
            q.answers,
        )
        for q in questions
    ]


def judge_index_by_answer(
    index: Index, questions: Sequence[JudgedQuestion]
) -> list[JudgedQuestion]:
    """Format (b): an index passage is relevant when it contains one of the answers."""
    passages = [JudgedPassage(p.id, p.text) for p in index.passages]
    return judge_by_answer(questions, passages).questions


# --- the methods -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """A way of ranking: passage ids for a question, best first. `encodes` when it needs the
    question's vector (its encoding time then counts in its latency)."""

    name: str
    rank: Callable[[Query, int], list[str]]
    encodes: bool = True
    baseline: bool = True


def plain_bm25(index: Index) -> LexicalIndex:
    """BM25 with Lucene's defaults over the index's passages, every question word kept."""
    texts = [p.embedding_text for p in index.passages]
    return LexicalIndex.build(
        texts, k1=LUCENE_K1, b=LUCENE_B, tokenizer=Tokenizer(drop_question_words=False)
    )


def baselines(index: Index, bm25: LexicalIndex) -> list[Method]:
    """BM25, dense only and their RRF hybrid over `index`."""
    ids = [p.id for p in index.passages]

    def lexical(query: Query, k: int) -> list[str]:
        return [ids[row] for row in top_rows(bm25.scores(query.text), k)]

    def dense(query: Query, k: int) -> list[str]:
        return [ids[row] for row in index.nearest(query.vector, k)[0]]

    def hybrid(query: Query, k: int) -> list[str]:
        fused = _rrf(index.nearest(query.vector, len(index))[0], bm25.scores(query.text))
        return [ids[row] for row in top_rows(fused, k)]

    return [
        Method("BM25", lexical, encodes=False),
        Method("dense", dense),
        Method(f"RRF hybrid k={RRF_CONSTANT}", hybrid),
    ]


def _rrf(dense_order: np.ndarray, lexical: np.ndarray) -> np.ndarray:
    """Reciprocal-rank fusion of a full dense ranking (rows, best first) and BM25 scores."""
    dense_rank = np.empty(len(lexical), dtype=np.float64)
    dense_rank[dense_order] = np.arange(1, len(dense_order) + 1)
    lexical_rank = np.empty(len(lexical), dtype=np.float64)
    lexical_rank[np.argsort(-lexical, kind="stable")] = np.arange(1, len(lexical) + 1)
    return 1.0 / (RRF_CONSTANT + dense_rank) + 1.0 / (RRF_CONSTANT + lexical_rank)


def pipeline(searcher: Searcher, name: str = DEFAULT_PIPELINE) -> Method:
    """`searcher`'s own ranking (the bot's), as a method."""

    def ranked(query: Query, k: int) -> list[str]:
        return [hit.passage.id for hit in searcher.search(query, k).hits]

    return Method(name, ranked, baseline=False)


# --- running them ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodResult:
    """One method's measures over the questions, and its per-question latency."""

    name: str
    scores: Scores
    latency: Latency
    baseline: bool


@dataclass(frozen=True)
class Evaluation:
    """Every method's result, and per question the default pipeline's own output."""

    methods: list[MethodResult]
    questions: list[JudgedQuestion]
    queries: list[Query]
    results: list[Results]  # the default pipeline's hits and confidence

    @property
    def best_baseline(self) -> MethodResult | None:
        """The baseline with the highest nDCG@10."""
        baselines = [m for m in self.methods if m.baseline]
        return max(baselines, key=lambda m: m.scores.ndcg_at_10, default=None)

    def method(self, name: str) -> MethodResult:
        """The result of the method called `name`."""
        return next(m for m in self.methods if m.name == name)


def evaluate(
    searcher: Searcher,
    questions: Sequence[JudgedQuestion],
    k: int = 10,
    *,
    variants: Sequence[Method] = (),
    bm25: LexicalIndex | None = None,
) -> Evaluation:
    """Rank every question by the baselines, any `variants` and the default pipeline; each
    question is encoded once, and a method's latency is its ranking plus that encoding."""
    results: list[Results] = []

    def default(query: Query, k: int) -> list[str]:
        results.append(searcher.search(query, k))
        return [hit.passage.id for hit in results[-1].hits]

    index = searcher.index
    if not isinstance(index, Index):  # the baselines read the index folder's own matrices
        raise TypeError("judged sets are measured on an index folder")
    methods = [
        *baselines(index, bm25 or plain_bm25(index)),
        *variants,
        Method(DEFAULT_PIPELINE, default, baseline=False),
    ]
    rankings: dict[str, list[list[str]]] = {m.name: [] for m in methods}
    seconds: dict[str, list[float]] = {m.name: [] for m in methods}
    queries = []
    for question in questions:
        started = time.perf_counter()
        query = searcher.encode_question(question.question)
        encoding = time.perf_counter() - started
        for method in methods:
            started = time.perf_counter()
            rankings[method.name].append(method.rank(query, k))
            spent = time.perf_counter() - started
            seconds[method.name].append(spent + (encoding if method.encodes else 0.0))
        queries.append(query)
    measured = [
        MethodResult(m.name, score_rankings(rankings[m.name], questions), latency(seconds[m.name]),
                     m.baseline)
        for m in methods
    ]  # fmt: skip
    return Evaluation(measured, list(questions), queries, results)


# --- answers ---------------------------------------------------------------------------------

# The quotes on the bot's first page.
PAGE = 3


@dataclass(frozen=True)
class AnswerReport:
    """Format (b): what a user of the bot sees, over the answerable questions (the first quote,
    the first page, the bold sentence, answered at all) and the unanswerable ones (answered
    anyway: a false answer)."""

    answerable: int
    unanswerable: int
    first_quote: float
    first_page: float
    bold_sentence: float
    answered: float
    false_answers: float | None  # None when no question is unanswerable


def answer_report(searcher: Searcher, evaluation: Evaluation) -> AnswerReport:
    """The default pipeline's answers to format (b) questions, as the bot gives them."""
    answerable = [
        (question, query, result)
        for question, query, result in zip(
            evaluation.questions, evaluation.queries, evaluation.results, strict=True
        )
        if question.answerable
    ]
    refused = [r for q, r in zip(evaluation.questions, evaluation.results, strict=True)
               if not q.answerable]  # fmt: skip

    def holds(hits: Sequence[Hit], question: JudgedQuestion) -> bool:
        return any(contains_answer(hit.passage.text, question.answers) for hit in hits)

    def bold(question: JudgedQuestion, query: Query, result: Results) -> bool:
        answers = searcher.answers(query, result.hits[:1])
        return bool(answers) and contains_answer(answers[0].sentence, question.answers)

    return AnswerReport(
        answerable=len(answerable),
        unanswerable=len(refused),
        first_quote=_share(holds(r.hits[:1], q) for q, _, r in answerable),
        first_page=_share(holds(r.hits[:PAGE], q) for q, _, r in answerable),
        bold_sentence=_share(bold(q, query, r) for q, query, r in answerable),
        answered=_share(r.answered for _, _, r in answerable),
        false_answers=_share(r.answered for r in refused) if refused else None,
    )


def _share(flags: Iterable[bool]) -> float:
    values = list(flags)
    return float(np.mean(values)) if values else 0.0
