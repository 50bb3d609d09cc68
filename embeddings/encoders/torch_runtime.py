"""The embedding model on torch: the only module that touches sentence-transformers.

The model loads lazily, on the first call that needs it, so reading an index, `--help` and an
unchanged rebuild never pay for importing torch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from embeddings.encoders.base import DEFAULT_MODEL, Vectors, resolve_model
from embeddings.errors import EncoderLoadError


class SentenceTransformerEncoder:
    """A sentence-transformers model, by name or local path, on the CPU."""

    def __init__(self, model: str = DEFAULT_MODEL, *, batch_size: int = 32) -> None:
        self._model_name = model
        self._batch_size = batch_size

    @property
    def name(self) -> str:
        """The name given for the model; a local path is recorded in its absolute form."""
        path = Path(self._model_name).expanduser()
        return str(path.resolve()) if path.exists() else self._model_name

    @property
    def max_tokens(self) -> int:
        """The model's `max_seq_length`."""
        return int(self._model.max_seq_length)

    def count_tokens(self, text: str) -> int:
        """Tokens with the model's own tokenizer, as the model would see them untruncated."""
        return len(self._model.tokenizer(text, add_special_tokens=True)["input_ids"])

    def encode_passages(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        """Passage-side embeddings (sentence-transformers sorts by length before batching)."""
        return self._encode(self._model.encode_document, texts, progress)

    def encode_queries(self, texts: Sequence[str]) -> Vectors:
        """Query-side embeddings: asymmetric models use their query prompt here."""
        return self._encode(self._model.encode_query, texts, False)

    def _encode(self, method: Any, texts: Sequence[str], progress: bool) -> Vectors:
        if not texts:
            return np.zeros((0, self._model.get_embedding_dimension()), dtype=np.float32)
        vectors = method(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    @cached_property
    def _model(self) -> Any:
        """The loaded model; a failure becomes one `EncoderLoadError` sentence."""
        _quiet_model_loading()
        try:
            from sentence_transformers import SentenceTransformer

            return SentenceTransformer(resolve_model(self._model_name), device="cpu")
        except Exception as error:  # any loader failure means the same thing to the caller
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise EncoderLoadError(
                f"Cannot load the model {self._model_name!r}: {reason}"
            ) from error


def _quiet_model_loading() -> None:
    """Silence the weight-loading progress bars and chatter that transformers prints."""
    for name in ("transformers", "sentence_transformers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
    except ImportError:  # older transformers: nothing to silence
        pass
