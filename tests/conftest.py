"""Shared fixtures: a fresh fake encoder and article folder per test, the real model, a
PostgreSQL server and a news site; and the helpers several test modules use."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from embeddings.encoders.base import DEFAULT_MODEL
from embeddings.encoders.torch_runtime import SentenceTransformerEncoder
from testbed.fake_encoder import FakeEncoder
from testbed.postgres_server import PostgresServer, why_unavailable
from tests.news_site import NewsSite

SEED_ARTICLES = Path(__file__).resolve().parent.parent / "data"
SEED_ARTICLE = SEED_ARTICLES / "000_ff471cfb659f57e3.txt"


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
