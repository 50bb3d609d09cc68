"""Where an index is: the folder or a database URL, and URLs shown without their passwords."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from embeddings.errors import PostgresMissingError
from embeddings.stores import FolderLocation, is_database_url, location_of, redact_url

REDACTED = [
    ("postgresql://newsqa:secret@db:5432/news", "postgresql://newsqa:***@db:5432/news"),
    ("postgresql://newsqa@db/news", "postgresql://newsqa@db/news"),
    ("postgresql:///news", "postgresql:///news"),
    ("postgres://:secret@db/news?sslmode=require", "postgres://:***@db/news?sslmode=require"),
    (
        "postgresql:///news?host=/run/pg&password=secret",
        "postgresql:///news?host=/run/pg&password=***",
    ),
    ("postgresql://a:p%40ss@db/news", "postgresql://a:***@db/news"),
]


@pytest.mark.parametrize(("url", "shown"), REDACTED)
def test_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    """A password in the user part or in the query is replaced by ***; the rest stays."""
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("store", "database"),
    [("postgresql://db/news", True), ("postgres://db/news", True), ("index", False),
     ("/var/lib/newsqa", False), ("mysql://db/news", False)],
)  # fmt: skip
def test_only_postgresql_urls_name_a_database(store: str, database: bool) -> None:
    """`--store` takes PostgreSQL URLs; anything else is not a database."""
    assert is_database_url(store) is database


def test_without_a_store_the_index_is_the_folder(tmp_path: Path) -> None:
    """No `--store`: the index folder, exactly as before."""
    assert location_of(tmp_path, None) == FolderLocation(tmp_path)


def test_a_database_without_its_driver_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    """Asking for a database where psycopg is not installed names the missing package."""
    for name in [n for n in sys.modules if n.startswith("embeddings.postgres")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an absent package imports as
    with pytest.raises(PostgresMissingError, match=r"not installed \(psycopg\)$"):
        location_of(Path("index"), "postgresql://db/news")
