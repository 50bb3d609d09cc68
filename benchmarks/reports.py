"""What every benchmark does with its report: print it, and keep it in benchmarks/results/."""

from __future__ import annotations

from pathlib import Path


def publish(report: str, path: Path, *, write: bool = True) -> int:
    """Print `report` and, unless `write` is off (``--no-write``), store it at `path`; the
    command's exit status."""
    if write:
        path.write_text(report, encoding="utf-8")
    print(report)
    return 0
