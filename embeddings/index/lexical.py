"""BM25 over passages: the lexical half of hybrid search, on `bm25s`.

Text becomes terms by lower-casing, taking runs of letters and digits, dropping English stop
words, and stemming with the Snowball English stemmer (PyStemmer, a compiled wheel: nothing is
downloaded). A saved index is a folder of plain files, readable without this module::

    lexical.json             format, version, tokeniser settings, passage count
    params.index.json        bm25s parameters (k1, b, method)
    vocab.index.json         term -> column
    {data,indices,indptr}.csc.index.npy   the term-by-passage score matrix (allow_pickle=False)
    lengths.npy              int32, per passage: its number of terms (its BM25 length)
    frequencies.npy, frequency_rows.npy, frequency_starts.npy
                             only in an index built with `frequencies` (an append segment): the
                             term frequencies, by term (the vocabulary's columns) then passage

bm25s stores finished scores, with the idf and average passage length of the passages it was
built from. An index in several segments (embeddings/index/segments.py) is searched by
`SegmentedLexical`, which scores every segment with the statistics of all of them (`Corpus`): a
segment that keeps its term frequencies (a small append segment) is scored exactly, from its
postings, with the corpus-wide document frequency and average length; the base segment keeps
bm25s's stored scores with each asked term's idf swapped for the corpus-wide one, so only its
length normalisation still uses its own average length. With b = 0.4, appends that change the
average length by a share d move a base score by less than 0.4 d (appending passages like the
base's moves the average, and so the scores, hardly at all; tests/test_segments.py pins 2% on a
tiny index whose appends move the average by 2%, and the same order wherever scores are more
than 2% apart). The append segments' scores are exact. Merging the segments (`newsqa index
--merge`, or a build past `MAX_SEGMENTS`) rebuilds one bm25s index, whose scores are exact
again.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embeddings.errors import IndexCorruptError, LexicalError
from embeddings.index.arrays import open_array

FORMAT = "newsqa-bm25"
FORMAT_VERSION = 1
# Lucene's BM25 defaults: the baseline the benchmarks compare with (the index uses its own,
# `embeddings.index.index.BM25_K1` and `BM25_B`).
LUCENE_K1, LUCENE_B = 1.2, 0.75
META = "lexical.json"
LENGTHS = "lengths.npy"
FREQUENCIES, FREQUENCY_ROWS, FREQUENCY_STARTS = (
    "frequencies.npy", "frequency_rows.npy", "frequency_starts.npy"
)  # fmt: skip

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


@dataclass(frozen=True)
class Postings:
    """Term frequencies by term: passages `rows[starts[t]:starts[t + 1]]` hold term column t
    `counts[...]` times."""

    counts: npt.NDArray[np.float32]
    rows: npt.NDArray[np.int32]
    starts: npt.NDArray[np.int64]

    @classmethod
    def of(cls, terms: Sequence[Sequence[str]], vocabulary: dict[str, int]) -> Postings:
        """The postings of passages given as their terms (`vocabulary`: term -> column)."""
        columns = np.array([vocabulary[t] for passage in terms for t in passage], dtype=np.int64)
        rows = np.repeat(np.arange(len(terms), dtype=np.int64), [len(p) for p in terms])
        keys, counts = np.unique(columns * len(terms) + rows, return_counts=True)
        starts = np.searchsorted(keys // len(terms), np.arange(len(vocabulary) + 1))
        return cls(
            counts.astype(np.float32), (keys % len(terms)).astype(np.int32), starts.astype(np.int64)
        )

    def save(self, folder: Path) -> None:
        np.save(folder / FREQUENCIES, self.counts, allow_pickle=False)
        np.save(folder / FREQUENCY_ROWS, self.rows, allow_pickle=False)
        np.save(folder / FREQUENCY_STARTS, self.starts, allow_pickle=False)

    @classmethod
    def load(cls, folder: Path, columns: int) -> Postings:
        """Open the postings of `folder`, insisting on consistent shapes (ValueError)."""
        postings = cls(
            *(np.load(folder / name, allow_pickle=False)
              for name in (FREQUENCIES, FREQUENCY_ROWS, FREQUENCY_STARTS))
        )  # fmt: skip
        if len(postings.starts) != columns + 1 or len(postings.counts) != len(postings.rows):
            raise ValueError("the term frequencies do not match the vocabulary")
        return postings


@dataclass(frozen=True)
class Corpus:
    """The BM25 statistics of every segment together: passages, average length, and the
    document frequency of the terms asked about."""

    count: int
    average_length: float
    frequencies: dict[str, int]

    def idf(self, term: str) -> float:
        """Lucene's inverse document frequency of `term` over the whole corpus."""
        frequency = self.frequencies.get(term, 0)
        return math.log(1.0 + (self.count - frequency + 0.5) / (frequency + 0.5))


class LexicalIndex:
    """A BM25 index over passage texts, in row order: `scores` has one value per passage."""

    def __init__(
        self,
        bm25: Any,
        tokenizer: Tokenizer,
        count: int,
        *,
        lengths: npt.NDArray[np.int32] | None = None,
        postings: Postings | None = None,
    ) -> None:
        self._bm25 = bm25
        self.tokenizer = tokenizer
        self.count = count
        self.lengths = lengths  # terms per passage; None in an index from before segments
        self.postings = postings
        # The score matrix's arrays as plain views of their memory maps: indexing a np.memmap
        # costs microseconds more per call, and BM25 over segments indexes them per term.
        matrix = bm25.scores if bm25 is not None else {}
        self._pointers, self._rows, self._data = (
            np.asarray(matrix.get(key, np.zeros(1, dtype=np.int64))).view(np.ndarray)
            for key in ("indptr", "indices", "data")
        )

    def __len__(self) -> int:
        return self.count

    @classmethod
    def build(
        cls,
        texts: Sequence[str],
        *,
        tokenizer: Tokenizer | None = None,
        k1: float = LUCENE_K1,
        b: float = LUCENE_B,
        frequencies: bool = False,
    ) -> LexicalIndex:
        """Index `texts` (one per passage, in row order) with BM25 (Lucene's variant); with
        `frequencies`, keep the term frequencies too (for scoring with other statistics)."""
        tokenizer = tokenizer or Tokenizer()
        if not texts:
            return cls(None, tokenizer, 0)
        bm25 = _bm25s().BM25(k1=k1, b=b, method="lucene")
        # An empty passage still gets a term, so every row exists in the index.
        terms = [tokenizer.passage_terms(t) or [""] for t in texts]
        bm25.index(terms, show_progress=False)
        lengths = np.array([len(passage) for passage in terms], dtype=np.int32)
        postings = Postings.of(terms, bm25.vocab_dict) if frequencies else None
        return cls(bm25, tokenizer, len(texts), lengths=lengths, postings=postings)

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

    def frequency(self, term: str) -> int:
        """How many passages hold `term`."""
        column = self._column(term)
        if column is None:
            return 0
        return int(self._pointers[column + 1] - self._pointers[column])

    def _column(self, term: str) -> int | None:
        """The term's column of the score matrix; None when no passage holds it (bm25s puts
        "" in every vocabulary, with a column only when a passage is empty)."""
        column = self._bm25.vocab_dict.get(term) if self.count else None
        if column is None or column + 1 >= len(self._pointers):
            return None
        return int(column)

    @property
    def terms(self) -> int | None:
        """The number of terms of all passages together (None when not recorded)."""
        return None if self.lengths is None else int(self.lengths.sum(dtype=np.int64))

    def corpus_scores(self, terms: Sequence[str], corpus: Corpus) -> Scores:
        """Every passage's BM25 score for the question `terms` with the statistics of the whole
        `corpus`: exact from the term frequencies when kept, else the stored scores with each
        term's idf swapped for the corpus's (their length normalisation stays this index's)."""
        scores = np.zeros(self.count, dtype=np.float32)
        for term in terms:
            column = self._column(term)
            if column is not None and self.postings is not None:
                self._add_exact(scores, column, corpus.idf(term), corpus.average_length)
            elif column is not None:
                self._add_stored(scores, column, corpus.idf(term) / self._own_idf(column))
        return scores

    def _add_exact(self, scores: Scores, column: int, idf: float, average: float) -> None:
        assert self.postings is not None and self.lengths is not None
        start, end = self.postings.starts[column], self.postings.starts[column + 1]
        rows, counts = self.postings.rows[start:end], self.postings.counts[start:end]
        k1, b = self._bm25.k1, self._bm25.b
        norm = k1 * (1 - b + b * self.lengths[rows] / average)
        scores[rows] += (idf * counts / (counts + norm)).astype(np.float32)

    def _add_stored(self, scores: Scores, column: int, weight: float) -> None:
        start, end = self._pointers[column], self._pointers[column + 1]
        # A term's column names each passage once, so a plain fancy-index add is exact.
        scores[self._rows[start:end]] += np.float32(weight) * self._data[start:end]

    def _own_idf(self, column: int) -> float:
        frequency = int(self._pointers[column + 1] - self._pointers[column])
        return math.log(1.0 + (self.count - frequency + 0.5) / (frequency + 0.5))

    def save(self, folder: Path) -> None:
        """Write the index as plain `.npy` and JSON files into `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        self._bm25.save(str(folder), show_progress=False)
        if self.lengths is not None:
            np.save(folder / LENGTHS, self.lengths, allow_pickle=False)
        if self.postings is not None:
            self.postings.save(folder)
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "count": self.count,
            "tokenizer": asdict(self.tokenizer),
            "frequencies": self.postings is not None,
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
            lengths = _lengths(folder, int(meta["count"]))
            columns = len(bm25.vocab_dict)
            postings = Postings.load(folder, columns) if meta.get("frequencies") else None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise IndexCorruptError(
                f"The lexical index at {folder} is damaged ({error})"
            ) from error
        if int(bm25.scores["num_docs"]) != meta["count"]:
            raise IndexCorruptError(f"The lexical index at {folder} does not match its meta")
        return cls(bm25, tokenizer, int(meta["count"]), lengths=lengths, postings=postings)


def _lengths(folder: Path, count: int) -> npt.NDArray[np.int32] | None:
    """The passages' lengths (memory-mapped), or None for an index written before they were."""
    if not (folder / LENGTHS).exists():
        return None
    lengths: npt.NDArray[np.int32] = open_array(folder / LENGTHS, np.int32, (count,))
    return lengths


class SegmentedLexical:
    """BM25 over the passages of several segments in row order, scored with the statistics
    of all of them (see the module docstring for how close the base segment's scores are)."""

    def __init__(self, parts: Sequence[LexicalIndex]) -> None:
        self.parts = list(parts)
        self.tokenizer = self.parts[0].tokenizer
        self.count = sum(part.count for part in self.parts)
        self.average_length = _average_length(self.parts)

    def __len__(self) -> int:
        return self.count

    def corpus(self, terms: Sequence[str]) -> Corpus:
        """The corpus-wide statistics for these terms."""
        frequencies = {t: sum(part.frequency(t) for part in self.parts) for t in set(terms)}
        return Corpus(self.count, self.average_length, frequencies)

    def scores(self, question: str) -> Scores:
        """The BM25 score of every passage of every segment for `question`."""
        terms = self.tokenizer.question_terms(question)
        corpus = self.corpus(terms)
        return np.concatenate([part.corpus_scores(terms, corpus) for part in self.parts])

    def idf(self, terms: Sequence[str]) -> npt.NDArray[np.float64]:
        """Each term's inverse document frequency over every segment."""
        corpus = self.corpus(terms)
        return np.array([corpus.idf(term) for term in terms], dtype=np.float64)


def _average_length(parts: Sequence[LexicalIndex]) -> float:
    """Terms per passage over all parts; a part written before lengths were recorded is taken
    to have the others' average."""
    known = [part for part in parts if part.terms is not None]
    passages = sum(part.count for part in known)
    if not passages:
        return 1.0
    return sum(part.terms or 0 for part in known) / passages
