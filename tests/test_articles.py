"""Reading article files: the news-export format, plain text, JSONL, and files to skip."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from embeddings.articles import read_articles
from testbed.articles import write_article
from tests.conftest import SEED_ARTICLE


def test_seed_article_header_gives_title_and_date(data_dir: Path) -> None:
    """The ` date YYYY-MM-DD Title` first line becomes the article's date and title."""
    [article] = read_articles(data_dir).articles
    assert article.title == (
        "Chongqing Holds Third Plenary Session to Accelerate Party Building in the New Era"
    )
    assert article.date == dt.date(2023, 7, 9)
    assert article.id == "000_ff471cfb659f57e3"
    assert article.source == "000_ff471cfb659f57e3.txt"


def test_seed_article_loses_share_buttons_but_no_paragraph(data_dir: Path) -> None:
    """The share-button tail is dropped; every real paragraph is kept."""
    [article] = read_articles(data_dir).articles
    assert "Share this" not in article.text
    assert not any(p in {"Twitter", "Facebook"} for p in article.paragraphs)
    assert len(article.paragraphs) == 7
    assert article.paragraphs[1].startswith("Jiang Hui, member of the Standing Committee")
    assert article.paragraphs[-1].endswith("in the new era and new journey.")


def test_plain_text_and_markdown_use_first_line_as_title(tmp_path: Path) -> None:
    """A `.txt` or `.md` without the header has its first line as title and no date."""
    write_article(tmp_path, "a.txt", "Plain title", "Body one.", "Body two.")
    write_article(tmp_path, "b.md", "# Markdown title", "Some text here.")
    a, b = read_articles(tmp_path).articles
    assert (a.title, a.date, a.paragraphs) == ("Plain title", None, ["Body one.", "Body two."])
    assert (b.title, b.id) == ("Markdown title", "b")


def test_jsonl_articles_keep_url_date_and_a_stable_id(tmp_path: Path) -> None:
    """Each JSONL line is an article; its id comes from the file and the record (or line)."""
    records = [
        {"title": "One", "text": "First text.", "date": "2024-03-01", "url": "https://x.test/1"},
        {"id": "abc", "title": "Two", "text": "Second text."},
    ]
    (tmp_path / "feed.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    one, two = read_articles(tmp_path).articles
    assert (one.id, one.date, one.url) == ("feed#1", dt.date(2024, 3, 1), "https://x.test/1")
    assert (two.id, two.date, two.url) == ("feed#abc", None, None)


def test_impossible_header_date_keeps_the_article_without_a_date(tmp_path: Path) -> None:
    """A header with 2023-02-30 still yields the title and text, with no date."""
    write_article(tmp_path, "a.txt", "Title", "Text of it.", date="2023-02-30")
    [article] = read_articles(tmp_path).articles
    assert (article.title, article.date, article.paragraphs) == ("Title", None, ["Text of it."])


BAD_FILES = [
    ("empty.txt", b"", "is empty"),
    ("blank.txt", b"  \n\n \n", "is empty"),
    ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00", "is a binary file"),
    ("latin1.txt", "Titel\n\nDer Bär läuft.".encode("latin-1"), "is not UTF-8 text"),
    ("header-only.txt", b" date 2024-01-01 Only a header\n", "no article text"),
    ("shares-only.txt", b"Title\n\nShare this: Twitter\n\nFacebook\n", "no article text"),
]


@pytest.mark.parametrize(("name", "content", "reason"), BAD_FILES)
def test_bad_file_is_named_and_skipped_while_others_are_read(
    data_dir: Path, name: str, content: bytes, reason: str
) -> None:
    """A bad file is reported by name with its reason, and the good article is still read."""
    (data_dir / name).write_bytes(content)
    result = read_articles(data_dir)
    assert [a.source for a in result.articles] == [SEED_ARTICLE.name]
    [skipped] = result.skipped
    assert skipped.path == name
    assert reason in skipped.reason


def test_unreadable_file_is_skipped_with_the_os_reason(data_dir: Path) -> None:
    """A file that fails to read (here: a link to /proc/self/mem) is named and skipped."""
    (data_dir / "unreadable.txt").symlink_to("/proc/self/mem")
    result = read_articles(data_dir)
    assert [s.path for s in result.skipped] == ["unreadable.txt"]
    assert "cannot be read" in result.skipped[0].reason
    assert len(result.articles) == 1


def test_bad_jsonl_line_is_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    """A broken JSONL line is named with its line number; the good lines still count."""
    lines = ['{"title": "A", "text": "a"}', "{not json", '["list"]', '{"title": "B"}']
    (tmp_path / "feed.jsonl").write_text("\n".join(lines))
    result = read_articles(tmp_path)
    assert [a.title for a in result.articles] == ["A"]
    assert [s.path for s in result.skipped] == [
        "feed.jsonl line 2",
        "feed.jsonl line 3",
        "feed.jsonl line 4",
    ]


def test_hidden_and_unknown_files_are_ignored(data_dir: Path) -> None:
    """Editor leftovers and other file types are not articles."""
    (data_dir / ".draft.txt").write_text("Title\n\nText.")
    (data_dir / "notes.pdf").write_bytes(b"%PDF")
    result = read_articles(data_dir)
    assert (len(result.articles), result.skipped) == (1, [])


def test_content_hash_changes_with_text_only(data_dir: Path) -> None:
    """Re-reading the same file gives the same hash; editing its text changes it."""
    before = read_articles(data_dir).articles[0].content_hash
    assert read_articles(data_dir).articles[0].content_hash == before
    path = data_dir / SEED_ARTICLE.name
    path.write_text(path.read_text().replace("July 8", "July 9"))
    assert read_articles(data_dir).articles[0].content_hash != before
