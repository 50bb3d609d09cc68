"""Shared fixtures: a deterministic fake encoder and article folders built per test."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from embeddings.encoders.base import DEFAULT_MODEL, Vectors
from embeddings.encoders.torch_runtime import SentenceTransformerEncoder
from tests.news_site import NewsSite
from tests.postgres_server import PostgresServer, why_unavailable

SEED_ARTICLES = Path(__file__).resolve().parent.parent / "data"
SEED_ARTICLE = SEED_ARTICLES / "000_ff471cfb659f57e3.txt"

_WORD = re.compile(r"\w+")


class FakeEncoder:
    """A bag-of-words hashing encoder: texts sharing words get similar vectors, no model needed.

    Tokens are words (plus two for the special tokens), which makes token limits easy to reason
    about in tests. `calls` records every batch it was asked to embed.
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
        return matrix / np.where(norms == 0, 1, norms)


@pytest.fixture
def encoder() -> FakeEncoder:
    """A fresh fake encoder."""
    return FakeEncoder()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An articles folder holding a copy of the seed article."""
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(SEED_ARTICLE, folder)
    return folder


@contextmanager
def logging_into(handler: logging.Handler, level: int, name: str = "") -> Iterator[None]:
    """Logger `name` (the root by default) at `level`, also writing to `handler`; both put
    back as they were afterwards."""
    logger = logging.getLogger(name)
    was = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(was)


def write_article(folder: Path, name: str, title: str, *paragraphs: str, date: str = "") -> Path:
    """Write an article file in the news-export format (or plain, without a date)."""
    header = f" date {date} {title}" if date else title
    path = folder / name
    path.write_text("\n\n".join([header, *paragraphs]) + "\n", encoding="utf-8")
    return path


# --- the real packaged model (tests marked `model`) --------------------------------------------

SEED_QUESTION = "Who held the press conference about the plenary session?"


@pytest.fixture(scope="session", autouse=True)
def offline_models() -> Iterator[None]:
    """Models load from local files only (as `newsqa` loads them), for the whole session; the
    variable is put back as it was afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="session")
def real_encoder() -> SentenceTransformerEncoder:
    """The default model on torch, loaded from its installed package, offline."""
    return SentenceTransformerEncoder()


@pytest.fixture(scope="session")
def onnx_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model exported once per session to an int8 ONNX folder."""
    pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime")
    pytest.importorskip("onnx", reason="quantising the export needs onnx")
    from embeddings.encoders.onnx_export import export_onnx

    return export_onnx(DEFAULT_MODEL, tmp_path_factory.mktemp("onnx") / "model")


# --- PostgreSQL (the database tests) -----------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server with pgvector for the session; skips without the wheel."""
    reason = why_unavailable()
    if reason:
        pytest.skip(f"no PostgreSQL for these tests: {reason}")
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def database_url(postgres_server: PostgresServer) -> str:
    """The URL of a new empty database (with pgvector) of the session's server."""
    return postgres_server.create_database()


@pytest.fixture
def site() -> Iterator[NewsSite]:
    """A local news site on 127.0.0.1: article pages in site chrome, and their feeds."""
    server = NewsSite()
    server.start()
    yield server
    server.stop()
