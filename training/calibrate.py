"""Fit the decision to answer for the reranker in embeddings/models/reranker/.

Run from the repository root after ``training.train_reranker`` (about two minutes)::

    .venv/bin/python -m training.calibrate

The train half of the judged BBC sets (``benchmarks/data/bbc_natural_train.jsonl``, questions
the articles answer, and ``bbc_unanswerable_train.jsonl``, questions they do not) goes through
the product's `Searcher` with the reranker. A logistic regression over each question's
`Evidence` (the reranker's relevance for the first hit, the best cosine, the share of rare
question words the first article lacks, whether the question names a year the article lacks)
learns "the articles answer this question"; the threshold is the highest confidence that still
answers `--answered` of the answerable train questions. Weights and threshold go into
``reranker.json`` (rewritten atomically). The held-out halves are never read here.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from embeddings.search.decision import Calibration, Evidence
from embeddings.search.reranker import MANIFEST_FILE, RERANKER_FOLDER, Reranker
from embeddings.search.searcher import Searcher
from training.corpus import bbc_searcher, read_questions

DATA = Path(__file__).resolve().parent.parent / "benchmarks" / "data"
ANSWERABLE = DATA / "bbc_natural_train.jsonl"
UNANSWERABLE = DATA / "bbc_unanswerable_train.jsonl"
# L2 penalty of the logistic regression: a few features, a hundred-odd questions.
PENALTY = 1.0

log = logging.getLogger("calibrate")


class Uncalibrated(Reranker):
    """The reranker with a neutral decision: the evidence is what calibration needs."""

    calibration = Calibration(0.0, 0.0, 0.0, 0.0, 0.0, threshold=0.5)


def evidence(searcher: Searcher, path: Path) -> list[Evidence]:
    """Each question's evidence, as the product weighs it."""
    found = []
    for question in read_questions(path):
        results = searcher.search(searcher.encode_question(question.text), 3)
        if results.evidence is None:
            raise SystemExit(f"No evidence for {question.id}: is the reranker reading?")
        found.append(results.evidence)
    return found


def features(items: Sequence[Evidence]) -> npt.NDArray[np.float64]:
    """The evidence as a matrix, one row per question, in `Calibration`'s order."""
    rows = [[e.relevance, e.cosine, e.missing, e.unmentioned_year] for e in items]
    return np.array(rows, dtype=np.float64)


def fit_logistic(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Weights (then bias) of an L2-penalised logistic regression, by Newton's method."""
    design = np.hstack([x, np.ones((len(x), 1))])
    weights = np.zeros(design.shape[1])
    penalty = np.diag([PENALTY] * x.shape[1] + [0.0])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-design @ weights))
        gradient = design.T @ (p - y) + penalty @ weights
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-8:
            break
    return weights


def threshold(confidences: npt.NDArray[np.float64], answered: float) -> float:
    """The highest threshold that still answers `answered` of these (answerable) questions."""
    ordered = np.sort(confidences)[::-1]
    keep = max(1, int(np.ceil(answered * len(ordered))))
    return float(ordered[keep - 1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reranker", type=Path, default=RERANKER_FOLDER)
    parser.add_argument("--answered", type=float, default=0.92,
                        help="share of the answerable train questions to answer")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    base = bbc_searcher()
    searcher = Searcher(base.index, base.encoder, reranker=Uncalibrated(args.reranker))
    yes, no = evidence(searcher, ANSWERABLE), evidence(searcher, UNANSWERABLE)
    x = features([*yes, *no])
    y = np.array([1.0] * len(yes) + [0.0] * len(no))
    relevance, cosine, missing, year, bias = (float(value) for value in fit_logistic(x, y))
    fitted = Calibration(relevance, cosine, missing, year, bias, threshold=0.5)
    confidences = np.array([fitted.confidence(e) for e in yes])
    calibration = replace(fitted, threshold=threshold(confidences, args.answered))
    false = np.mean([calibration.confidence(e) >= calibration.threshold for e in no])
    log.info("%s: train answered %.1f%%, false answers %.1f%%", calibration,
             100 * np.mean(confidences >= calibration.threshold), 100 * false)  # fmt: skip
    write(args.reranker, calibration, len(yes), len(no))
    return 0


def write(folder: Path, calibration: Calibration, answerable: int, unanswerable: int) -> None:
    """Store the calibration in the reranker's manifest, replacing the file atomically."""
    path = folder / MANIFEST_FILE
    record = json.loads(path.read_text(encoding="utf-8"))
    record["decision"] = {
        **calibration.to_json(),
        "fitted_on": {"answerable": answerable, "unanswerable": unanswerable,
                      "files": [ANSWERABLE.name, UNANSWERABLE.name]},
    }  # fmt: skip
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    partial.replace(path)


if __name__ == "__main__":
    raise SystemExit(main())
