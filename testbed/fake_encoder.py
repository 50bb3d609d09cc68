"""A deterministic fake encoder: texts sharing words get similar vectors, and no model loads."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from embeddings import Vectors

_WORD = re.compile(r"\w+")


class FakeEncoder:
    """A bag-of-words hashing encoder: texts sharing words get similar vectors, no model needed.

    Tokens are words (plus two for the special tokens), which makes token limits easy to reason
    about in tests. `passage_batches` records every batch of passages it was asked to embed.
    """

    def __init__(self, name: str = "fake-encoder", *, dimension: int = 1024, max_tokens: int = 256):
        self.name = name
        self.max_tokens = max_tokens
        self.dimension = dimension
        self.passage_batches: list[list[str]] = []

    @property
    def embedded_passages(self) -> int:
        """How many passage texts were embedded in all."""
        return sum(len(batch) for batch in self.passage_batches)

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 2

    def encode_passages(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        self.passage_batches.append(list(texts))
        return self._encode(texts)

    def encode_queries(self, texts: Sequence[str]) -> Vectors:
        return self._encode(texts)

    def _encode(self, texts: Sequence[str]) -> Vectors:
        matrix = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                bucket = int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dimension
                matrix[row, bucket] += 1.0
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return (matrix / np.where(norms == 0, 1, norms)).astype(np.float32)
