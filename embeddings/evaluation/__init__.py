"""How well the search answers judged question sets: the sets, the measures, and the runner
(`judging`) that puts each method through them side by side."""

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

__all__ = [
    "DEFAULT_PIPELINE",
    "PAGE",
    "AnswerReport",
    "CachingEncoder",
    "Evaluation",
    "Judged",
    "MethodResult",
    "answer_judgements",
    "answer_report",
    "evaluate",
    "passage_judgements",
    "pipeline",
]
