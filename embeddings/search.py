"""Questions in, hits out: the text-level search wrapped around the index's vector search."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embeddings.encoder import Encoder, Vectors
from embeddings.errors import EmptyQuestionError
from embeddings.index import Hit, Index
from embeddings.language import is_english
from embeddings.sentences import split_sentences

Vector = Vectors  # one row: a query vector


@dataclass(frozen=True)
class Query:
    """A question's vector, and whether it came from the multilingual model."""

    vector: Vector
    multilingual: bool = False


# How many nearest passages to consider before keeping one per article.
CANDIDATES = 50


@dataclass(frozen=True)
class Answer:
    """A hit with the span of its passage text that best answers the question."""

    hit: Hit
    sentence_start: int
    sentence_end: int

    @property
    def sentence(self) -> str:
        """The answering sentence itself."""
        return self.hit.passage.text[self.sentence_start : self.sentence_end]


class Searcher:
    """Answers questions from one index with one encoder."""

    def __init__(self, index: Index, encoder: Encoder, multilingual: Encoder | None = None):
        self.index = index
        self.encoder = encoder
        # Only usable when the index holds this model's second matrix.
        usable = multilingual is not None and index.multilingual_model == multilingual.name
        self.multilingual = multilingual if usable else None

    def ask(self, question: str, k: int = 3) -> list[Answer]:
        """The best `k` passages for `question`, each with its answering sentence."""
        query = self.encode_question(question)
        return self.answers(query, self.rank(query, k))

    def encode_question(self, question: str) -> Query:
        """The question's query-side vector: from the multilingual model when the question is
        not in English and the index has that model's matrix. A question without words is an
        error."""
        if not any(char.isalnum() for char in question):
            raise EmptyQuestionError("The question has no words")
        multilingual = self.multilingual is not None and not is_english(question)
        encoder = self._encoder(multilingual)
        return Query(encoder.encode_queries([question.strip()])[0], multilingual)

    def rank(self, query: Query, k: int) -> list[Hit]:
        """The best `k` passages, preferring a spread of articles over one article's neighbours."""
        hits = self.index.search(query.vector, max(k, CANDIDATES), multilingual=query.multilingual)
        return spread_articles(hits, k)

    def answers(self, query: Query, hits: list[Hit]) -> list[Answer]:
        """The hits, each with the sentence in its passage closest to the question."""
        spans = [sentence_spans(hit.passage.text) for hit in hits]
        texts = [
            hit.passage.text[a:b] for hit, own in zip(hits, spans, strict=True) for a, b in own
        ]
        encoder = self._encoder(query.multilingual)
        scores = encoder.encode_passages(texts) @ query.vector if texts else np.zeros(0)
        answers, offset = [], 0
        for hit, own in zip(hits, spans, strict=True):
            best = offset + int(np.argmax(scores[offset : offset + len(own)]))
            answers.append(Answer(hit, *own[best - offset]))
            offset += len(own)
        return answers

    def _encoder(self, multilingual: bool) -> Encoder:
        return self.multilingual if multilingual and self.multilingual else self.encoder


def spread_articles(hits: list[Hit], k: int) -> list[Hit]:
    """Each article's best hit first (in score order), then the remaining hits, up to `k`.

    One passage per article reads best; a second passage of an article appears only when
    fewer than `k` articles match at all.
    """
    seen: set[str] = set()
    firsts: list[Hit] = []
    seconds: list[Hit] = []
    for hit in hits:
        (seconds if hit.passage.article_id in seen else firsts).append(hit)
        seen.add(hit.passage.article_id)
    return (firsts + seconds)[:k]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text` (the whole text if it has no sentence)."""
    spans, position = [], 0
    for sentence in split_sentences(text):
        start = text.find(sentence, position)
        spans.append((start, start + len(sentence)))
        position = start + len(sentence)
    return spans or [(0, len(text))]
