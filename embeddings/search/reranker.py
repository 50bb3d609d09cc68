"""The reranker: a small cross-encoder that reads the question together with each passage.

The bi-encoder finds the right article; which of its paragraphs answers the question, and which
sentence of it, takes a model that reads the two together. The reranker is all-MiniLM-L6-v2
fine-tuned for that (``training/train_reranker.py``), exported to int8 ONNX (22 MB) and shipped
with the package (``embeddings/models/reranker/``), so it loads offline like the encoder.

Its input is ``[CLS] question [SEP] title \\n passage [SEP]``; it gives two outputs:

    relevance   one logit per passage: how likely the passage answers the question (trained
                pointwise as well as listwise, so it is comparable across questions and feeds
                the decision to answer)
    tokens      one logit per token: how much the token belongs to the answer; a sentence's
                score is the mean over its tokens, which picks the bold sentence without
                embedding any sentence at question time

The folder holds ``model.onnx``, the model's ``tokenizer.json``, and ``reranker.json`` (its
token limit, how it was trained, and the calibrated decision to answer that goes with it).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings.cores import cores
from embeddings.encoders.onnx_runtime import (
    MODEL_FILE,
    TOKENIZER_FILE,
    batches,
    manifest_errors,
    one_thread_session,
    padded,
    read_manifest,
    share_batches,
)
from embeddings.errors import RerankerLoadError
from embeddings.passages import Passage
from embeddings.search.decision import Calibration
from embeddings.sentences import sentence_spans

RERANKER_FOLDER = Path(__file__).resolve().parent.parent / "models" / "reranker"
# The model and tokenizer files are named as the encoder's export names them; the manifest
# is its own, and shares the encoder's `MANIFEST_VERSION`.
MANIFEST_FILE = "reranker.json"
MANIFEST_FORMAT = "newsqa-reranker"
# One passage per onnxruntime call: the int8 model quantises its activations per call, so a
# passage read beside others would score differently from the same passage alone (by up to
# 0.3 in relevance); one at a time costs no more per token, and the calls of one question are
# shared out over the cores.
BATCH_SIZE = 1


@dataclass(frozen=True)
class Reading:
    """What the reranker made of one passage: its relevance logit, and one score per sentence
    of the passage text (in `sentence_spans` order; a sentence cut off by the token limit
    scores -inf)."""

    relevance: float
    sentences: tuple[float, ...]

    @property
    def best_sentence(self) -> int:
        """The index of the sentence that best answers the question."""
        return int(np.argmax(self.sentences)) if self.sentences else 0


@dataclass(frozen=True)
class Manifest:
    """What ``reranker.json`` says about the model."""

    max_tokens: int
    record: dict[str, Any]

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        """The manifest in `folder`; a missing or foreign one is `RerankerLoadError`."""
        with manifest_errors(RerankerLoadError, f"No reranker model in {folder}"):
            record = read_manifest(folder / MANIFEST_FILE, MANIFEST_FORMAT)
            return cls(int(record["max_tokens"]), record)


class Reranker:
    """The exported reranker in `folder`, run by onnxruntime on the CPU (one thread a call)."""

    def __init__(self, folder: Path = RERANKER_FOLDER) -> None:
        self.folder = folder
        self.manifest = Manifest.read(folder)
        self._sessions: list[Any] = []
        self._lock = threading.Lock()

    @cached_property
    def calibration(self) -> Calibration:
        """The decision to answer fitted for this model (`training/calibrate.py`)."""
        try:
            return Calibration.from_json(self.manifest.record["decision"])
        except (KeyError, TypeError, ValueError) as error:
            raise RerankerLoadError(
                f"The reranker in {self.folder} has no calibrated decision ({error})"
            ) from error

    def read(self, question: str, passages: Sequence[Passage]) -> list[Reading]:
        """A reading of each passage for `question`, in the order given."""
        if not passages:
            return []
        inputs = [_input(question, passage) for passage in passages]
        encodings = self._tokenizer.encode_batch([(q, text) for q, text, _ in inputs])
        lengths = np.array([len(e.ids) for e in encodings])
        relevance = np.zeros(len(passages), dtype=np.float32)
        tokens: list[npt.NDArray[np.float32]] = [np.zeros(0, dtype=np.float32)] * len(passages)

        def run(session: Any, rows: npt.NDArray[np.intp]) -> None:
            ids, mask = padded([encodings[row].ids for row in rows], lengths[rows])
            types = np.array(
                [_row(encodings[row].type_ids, ids.shape[1]) for row in rows], dtype=np.int64
            )
            scores, logits = session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            )
            relevance[rows] = scores
            for position, row in enumerate(rows):
                tokens[row] = logits[position, : lengths[row]]

        work = list(batches(np.argsort(-lengths, kind="stable"), BATCH_SIZE))
        share_batches(work, self._sessions_for(len(work)), run, lambda done: None)
        return [
            Reading(
                float(relevance[row]), _sentence_scores(encodings[row], tokens[row], inputs[row])
            )
            for row in range(len(passages))
        ]

    def _sessions_for(self, batches_count: int) -> list[Any]:
        wanted = max(1, min(batches_count, cores()))
        with self._lock:
            while len(self._sessions) < wanted:
                self._sessions.append(self._new_session())
            return self._sessions[:wanted]

    def _new_session(self) -> Any:
        return one_thread_session(self.folder / MODEL_FILE, RerankerLoadError)

    @cached_property
    def _tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.folder / TOKENIZER_FILE))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=self.manifest.max_tokens, strategy="only_second")
        return tokenizer


def _input(question: str, passage: Passage) -> tuple[str, str, int]:
    """The question, the passage side of the pair, and where the passage text starts in it."""
    return (question, *pair_text(passage.title, passage.text))


def pair_text(title: str, text: str) -> tuple[str, int]:
    """The passage side of the reranker's input, its title first, and where `text` starts."""
    prefix = f"{title}\n" if title else ""
    return prefix + text, len(prefix)


def _row(values: Sequence[int], width: int) -> list[int]:
    return [*values, *[0] * (width - len(values))]


def _sentence_scores(
    encoding: Any, logits: npt.NDArray[np.float32], source: tuple[str, str, int]
) -> tuple[float, ...]:
    """The mean token logit of each sentence of the passage text (-inf: no token survived
    truncation)."""
    _, pair, start = source
    spans = sentence_spans(pair[start:])
    owners = token_sentences(encoding, start, spans)
    counts = np.bincount(owners[owners >= 0], minlength=len(spans))
    sums = np.bincount(owners[owners >= 0], weights=logits[owners >= 0], minlength=len(spans))
    means = np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)
    return tuple(float(value) for value in means)


def token_sentences(
    encoding: Any, start: int, spans: Sequence[tuple[int, int]]
) -> npt.NDArray[np.intp]:
    """For each token of a (question, title + passage) encoding, the passage sentence it falls
    in (its index in `spans`, offsets counted from `start`), or -1 outside the passage text."""
    ends = np.array([end for _, end in spans])
    owners = np.full(len(encoding.ids), -1, dtype=np.intp)
    for position, (sequence, (first, _)) in enumerate(
        zip(encoding.sequence_ids, encoding.offsets, strict=True)
    ):
        if sequence == 1 and first >= start:
            owners[position] = min(
                int(np.searchsorted(ends, first - start, side="right")), len(spans) - 1
            )
    return owners
