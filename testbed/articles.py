"""Article files written as the news export writes them, for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path


def write_article(folder: Path, name: str, title: str, *paragraphs: str, date: str = "") -> Path:
    """Write an article file in the news-export format (or plain, without a date)."""
    header = f" date {date} {title}" if date else title
    path = folder / name
    path.write_text("\n\n".join([header, *paragraphs]) + "\n", encoding="utf-8")
    return path
