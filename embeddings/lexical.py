"""BM25 over passages: the lexical half of hybrid search, on `bm25s`.

Text becomes terms by lower-casing, taking runs of letters and digits, dropping English stop
words, and stemming with the Snowball English stemmer (PyStemmer, a compiled wheel: nothing is
downloaded). A saved index is a folder of plain files, readable without this module::

    lexical.json             format, version, tokeniser settings, passage count
    params.index.json        bm25s parameters (k1, b, method)
    vocab.index.json         term -> column
    {data,indices,indptr}.csc.index.npy   the term-by-passage score matrix (allow_pickle=False)
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings.errors import IndexCorruptError, NewsqaError

FORMAT = "newsqa-bm25"
FORMAT_VERSION = 1
META = "lexical.json"

Scores = npt.NDArray[np.float32]

_TERM = re.compile(r"[^\W_]+", re.UNICODE)
# Lucene's English stop words (bm25s's list), plus the words questions are made of.
STOP_WORDS = frozenset(
    {
        "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is",
        "it", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there",
        "these", "they", "this", "to", "was", "will", "with",
    }
)  # fmt: skip
QUESTION_WORDS = frozenset(
    {
        "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "do", "does",
        "did", "is", "was", "were", "has", "have", "had", "name", "tell", "me",
    }
)  # fmt: skip


class LexicalError(NewsqaError):
    """The lexical index cannot be built or used as asked."""


@dataclass(frozen=True)
class Tokenizer:
    """How text becomes BM25 terms; saved with an index so questions are cut the same way."""

    stem: bool = True
    drop_question_words: bool = True

    def passage_terms(self, text: str) -> list[str]:
        """The terms of a passage: words without stop words, stemmed."""
        return self._terms(text, STOP_WORDS)

    def question_terms(self, text: str) -> list[str]:
        """The terms of a question; question words ("who", "when") carry no topic and go too."""
        stop = STOP_WORDS | QUESTION_WORDS if self.drop_question_words else STOP_WORDS
        return self._terms(text, stop)

    def _terms(self, text: str, stop: frozenset[str]) -> list[str]:
        words = [w for w in _TERM.findall(text.lower()) if w not in stop]
        if not self.stem:
            return words
        stemmed: list[str] = _stemmer().stemWords(words)
        return stemmed


@cache
def _stemmer() -> Any:
    """The Snowball English stemmer (PyStemmer)."""
    try:
        stemmer = importlib.import_module("Stemmer")
    except ImportError as error:
        raise LexicalError(
            "Stemming needs the PyStemmer package (pip install PyStemmer)"
        ) from error
    return stemmer.Stemmer("english")


def _bm25s() -> Any:
    """The bm25s module, imported on first use (it ships no type information)."""
    return importlib.import_module("bm25s")


class LexicalIndex:
    """A BM25 index over passage texts, in row order: `scores` has one value per passage."""

    def __init__(self, bm25: Any, tokenizer: Tokenizer, count: int) -> None:
        self._bm25 = bm25
        self.tokenizer = tokenizer
        self.count = count

    def __len__(self) -> int:
        return self.count

    @classmethod
    def build(
        cls,
        texts: Sequence[str],
        *,
        tokenizer: Tokenizer | None = None,
        k1: float = 1.2,
        b: float = 0.75,
    ) -> LexicalIndex:
        """Index `texts` (one per passage, in row order) with BM25 (Lucene's variant)."""
        tokenizer = tokenizer or Tokenizer()
        if not texts:
            return cls(None, tokenizer, 0)
        bm25 = _bm25s().BM25(k1=k1, b=b, method="lucene")
        # An empty passage still gets a term, so every row exists in the index.
        bm25.index([tokenizer.passage_terms(t) or [""] for t in texts], show_progress=False)
        return cls(bm25, tokenizer, len(texts))

    def scores(self, question: str) -> Scores:
        """The BM25 score of every passage for `question` (0 where no term matches)."""
        if self.count == 0:
            return np.zeros(0, dtype=np.float32)
        known = self._bm25.get_tokens_ids(self.tokenizer.question_terms(question))
        if not known:
            return np.zeros(self.count, dtype=np.float32)
        return np.asarray(self._bm25.get_scores_from_ids(known), dtype=np.float32)

    def idf(self, terms: Sequence[str]) -> npt.NDArray[np.float64]:
        """Each term's inverse document frequency over the passages (Lucene's BM25 form);
        a term no passage holds gets the highest."""
        if self.count == 0:
            return np.zeros(len(terms))
        vocabulary = self._bm25.vocab_dict
        pointers = np.asarray(self._bm25.scores["indptr"])
        frequency = np.array([
            pointers[vocabulary[t] + 1] - pointers[vocabulary[t]] if t in vocabulary else 0
            for t in terms
        ], dtype=np.float64)  # fmt: skip
        return np.log(1.0 + (self.count - frequency + 0.5) / (frequency + 0.5))

    def save(self, folder: Path) -> None:
        """Write the index as plain `.npy` and JSON files into `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        self._bm25.save(str(folder), show_progress=False)
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "count": self.count,
            "tokenizer": asdict(self.tokenizer),
        }
        (folder / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path, *, mmap: bool = True) -> LexicalIndex:
        """Open an index written by `save`; damage is `IndexCorruptError`."""
        try:
            meta = json.loads((folder / META).read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
                raise ValueError(f"unknown format {meta.get('format')!r} v{meta.get('version')!r}")
            tokenizer = Tokenizer(**meta["tokenizer"])
            bm25 = _bm25s().BM25.load(str(folder), mmap=mmap, show_progress=False)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise IndexCorruptError(
                f"The lexical index at {folder} is damaged ({error})"
            ) from error
        if int(bm25.scores["num_docs"]) != meta["count"]:
            raise IndexCorruptError(f"The lexical index at {folder} does not match its meta")
        return cls(bm25, tokenizer, int(meta["count"]))
