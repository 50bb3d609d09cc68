"""Whether the articles answer a question: one decision, shared by the bot, `ask` and `eval`.

With the reranker, the confidence is a calibrated probability that the first quote answers the
question: a logistic model over three pieces of evidence, fitted on the train half of the
judged question sets (``training/calibrate.py``) and stored beside the reranker
(``reranker.json``):

* the reranker's relevance logit for the first hit: it read the question with the passage;
* the best cosine between the question and any passage: how near the archive comes at all;
* the share of the question's rare words that the first hit's article lacks (by inverse
  document frequency): a question about a salary that the article never mentions is about
  something the article does not report;
* whether the question names a year that the first hit's article never mentions: a question
  about 2008 put to a story from 2005 asks about later events, which no article in the
  archive can report however close its words come.

Without the reranker (switched off, or a question matched by the multilingual model, which the
English reranker cannot read) the confidence is the best cosine, as the bi-encoder gives it,
plus a small bonus when the first hit holds most of the question's words (`Searcher`'s
`WORDS_HELD` and `WORDS_HELD_BONUS`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Without the reranker: below this cosine between a question and its nearest passage, the
# articles do not answer it (chosen on judged BBC questions for at most 10% false answers).
MIN_COSINE = 0.45
# multilingual-e5 scores crowd into 0.7-0.9; below this a passage is not an answer.
MULTILINGUAL_MIN_COSINE = 0.8


@dataclass(frozen=True)
class Evidence:
    """What the decision weighs for one question."""

    relevance: float  # the reranker's logit for the first hit
    cosine: float  # the best cosine of any passage
    missing: float  # 0..1: IDF-weighted share of the question's terms its first article lacks
    unmentioned_year: float = 0.0  # 1 when the question names a year its first article lacks


@dataclass(frozen=True)
class Calibration:
    """A logistic model of "the first quote answers the question" over the evidence."""

    relevance: float
    cosine: float
    missing: float
    unmentioned_year: float
    bias: float
    threshold: float  # the default minimum confidence: chosen with the weights

    def confidence(self, evidence: Evidence) -> float:
        """The probability that the first quote answers the question."""
        logit = (
            self.relevance * evidence.relevance
            + self.cosine * evidence.cosine
            + self.missing * evidence.missing
            + self.unmentioned_year * evidence.unmentioned_year
            + self.bias
        )
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, logit))))

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Calibration:
        """The calibration `to_json` wrote."""
        weights = record["weights"]
        return cls(
            float(weights["relevance"]),
            float(weights["cosine"]),
            float(weights["missing"]),
            # A calibration fitted before this evidence existed gives it no weight.
            float(weights.get("unmentioned_year", 0.0)),
            float(record["bias"]),
            float(record["threshold"]),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready record."""
        return {
            "weights": {
                "relevance": self.relevance,
                "cosine": self.cosine,
                "missing": self.missing,
                "unmentioned_year": self.unmentioned_year,
            },
            "bias": self.bias,
            "threshold": self.threshold,
        }


@dataclass(frozen=True)
class Thresholds:
    """The minimum confidence to answer, for each way a confidence is made."""

    calibrated: float | None = None  # None: the calibration's own threshold
    cosine: float = MIN_COSINE
    multilingual: float = MULTILINGUAL_MIN_COSINE


DEFAULT_THRESHOLDS = Thresholds()
