"""The command line: real click parsing, and one-sentence errors that name the fix."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bot import cli
from bot.cli import main
from bot.logs import LibraryLevelFilter
from embeddings import errors
from embeddings.articles import read_articles
from embeddings.encoders.base import DEFAULT_MODEL
from embeddings.index.build import build_index
from embeddings.index.index import current_generation
from embeddings.index.layout import VECTORS
from testbed.fake_encoder import FakeEncoder


@pytest.fixture(autouse=True)
def torch_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """These indexes are built by the fake encoder under the torch model's name."""
    monkeypatch.setenv("NEWSQA_BACKEND", "torch")


def _invoke(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), input=input)
    return result.exit_code, result.output


@pytest.fixture
def index_dir(data_dir: Path, tmp_path: Path) -> Path:
    """An index of the seed article, recorded as built by the default model."""
    folder = tmp_path / "index"
    build_index(read_articles(data_dir).articles, FakeEncoder(DEFAULT_MODEL), folder)
    return folder


def _corrupt(index_dir: Path) -> None:
    np.save(index_dir / str(current_generation(index_dir)) / VECTORS, np.zeros((2, 2)))


def _flip_a_byte(index_dir: Path) -> None:
    path = index_dir / str(current_generation(index_dir)) / VECTORS
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40
    path.write_bytes(bytes(data))


ERRORS = [
    # (arguments, setup, expected words in the one-line error)
    (["index", "--data", "{empty}"], None, "No readable articles in"),
    (["index", "--data", "{missing}"], None, "does not exist; put article files"),
    (["ask", "anything", "--index", "{missing}"], None, "No index at"),
    (["ask", "   ", "--index", "{index}"], None, "The question has no words; ask something, e.g."),
    (
        ["ask", "q", "--index", "{index}", "--model", "other/model"],
        None,
        "rebuild it with: newsqa index --model other/model",
    ),
    (["ask", "q", "--index", "{index}"], _corrupt, "is damaged"),
    (["check", "--index", "{index}"], _flip_a_byte, "does not match its checksum); rebuild it"),
    (["check", "--index", "{missing}"], None, "No index at"),
    (["chat", "--index", "{missing}"], None, "build one with: newsqa index"),
    (["bot", "--index", "{missing}"], None, "No bot token; set TELEGRAM_BOT_TOKEN"),
    (["bot", "--token", "1:x", "--index", "{missing}"], None, "No index at"),
]


@pytest.mark.parametrize(("args", "setup", "message"), ERRORS)
def test_bad_input_is_one_sentence_naming_the_fix(
    tmp_path: Path,
    index_dir: Path,
    args: list[str],
    setup,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    """Each error exits non-zero with an `Error:` line and no traceback."""
    (tmp_path / "empty").mkdir()
    places = {"empty": tmp_path / "empty", "missing": tmp_path / "missing", "index": index_dir}
    if setup:
        setup(index_dir)
    code, output = _invoke(*(arg.format(**places) for arg in args))
    assert code == 1
    assert message in output
    assert "Traceback" not in output
    assert output.strip().startswith("Error:") and len(output.strip().splitlines()) == 1


def test_bad_allowed_chats_is_a_usage_error() -> None:
    """A chat list that is not numbers is refused before anything loads, naming the option."""
    code, output = _invoke("bot", "--token", "1:x", "--allowed-chats", "12,abc")
    assert code == 2
    assert "Invalid value for '--allowed-chats'" in output
    assert "'12,abc' is not a comma-separated list of chat ids" in output


def test_bad_admins_is_a_usage_error() -> None:
    """An admin list that is not user ids is refused before anything loads, naming the option."""
    code, output = _invoke("bot", "--token", "1:x", "--admins", "12 ann")
    assert code == 2
    assert "Invalid value for '--admins'" in output
    assert "'12 ann' is not a list of Telegram user ids" in output


@pytest.mark.parametrize("value", ["12,34", "12 34", " 12, 34 ", "34,12,"])
def test_admins_are_separated_by_commas_or_spaces(value: str) -> None:
    """NEWSQA_ADMINS may list the ids as an operator types them."""
    assert cli._user_ids(None, None, value) == frozenset({12, 34})  # type: ignore[arg-type]


def test_admins_rebuild_the_index_their_articles_join(data_dir: Path, tmp_path: Path) -> None:
    """With admins, the bot gets the means to add articles and rebuild; without, none."""
    pages = cli.fetcher(allow_private_fetch=False, fetch_timeout=1.0)
    args = (pages, data_dir, tmp_path / "index", None, FakeEncoder())
    assert cli.make_admin(frozenset(), *args) is None
    admin = cli.make_admin(frozenset({12}), *args)
    assert admin is not None and admin.allows(12) and not admin.allows(34)
    admin.rebuild()
    assert current_generation(tmp_path / "index") is not None


def test_skipped_files_are_named_and_the_build_goes_on(data_dir: Path, tmp_path: Path) -> None:
    """An unreadable article is reported by name; the others are still indexed."""
    (data_dir / "broken.txt").write_bytes(b"\xff\xfe\x00\x01")
    build_index(read_articles(data_dir).articles, FakeEncoder(DEFAULT_MODEL), tmp_path / "index")
    code, output = _invoke("index", "--data", str(data_dir), "--index", str(tmp_path / "index"))
    assert code == 0
    assert f"Skipped {data_dir / 'broken.txt'}: broken.txt: is a binary file" in output
    assert "up to date: 1 article, 7 passages" in output


def test_options_read_environment_variables(data_dir: Path, index_dir: Path) -> None:
    """NEWSQA_DATA and NEWSQA_INDEX configure the command like the options do."""
    result = CliRunner().invoke(
        main, ["index"], env={"NEWSQA_DATA": str(data_dir), "NEWSQA_INDEX": str(index_dir)}
    )
    assert result.exit_code == 0, result.output
    assert "is up to date" in result.output


def test_help_lists_the_commands_and_their_environment_variables() -> None:
    """`--help` works without loading any model and documents the env vars."""
    code, output = _invoke("--help")
    assert code == 0
    for command in ("index", "ask", "chat", "run"):
        assert command in output
    code, output = _invoke("ask", "--help")
    assert "NEWSQA_INDEX" in output and "NEWSQA_MODEL" in output


def test_check_reports_a_whole_index(index_dir: Path) -> None:
    """`newsqa check` reads every file of a good index and says it is whole."""
    code, output = _invoke("check", "--index", str(index_dir))
    assert code == 0 and "is whole: 7 passages" in output


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Questions are encoded by the fake encoder (under the default model's name)."""
    monkeypatch.setattr(cli, "make_encoder", lambda *args, **kwargs: FakeEncoder(DEFAULT_MODEL))


@pytest.mark.usefixtures("fake_model")
def test_ask_dash_answers_each_stdin_line_as_one_json_object(index_dir: Path) -> None:
    """`ask -` reads one question a line (skipping lines without words); `--json` prints one
    object per question with the decision and the hits: text, ranking score (descending),
    cosine and bold sentence."""
    questions = "Who held the press conference?\n\n  ?\nWhat are the seven capabilities?\n"
    code, output = _invoke(
        "ask", "-", "--json", "--no-rerank", "--min-score", "0", "--index", str(index_dir),
        input=questions,
    )  # fmt: skip
    assert code == 0, output
    records = [json.loads(line) for line in output.splitlines()]
    assert [r["question"] for r in records] == [
        "Who held the press conference?",
        "What are the seven capabilities?",
    ]
    for record in records:
        assert record["answered"] is True and len(record["hits"]) == 3
        scores = [hit["score"] for hit in record["hits"]]
        assert scores == sorted(scores, reverse=True)
        for hit in record["hits"]:
            assert hit["sentence"] in hit["text"] and -1.0 <= hit["cosine"] <= 1.0
    assert "seven capabilities" in records[1]["hits"][0]["text"]


@pytest.mark.usefixtures("fake_model")
def test_ask_a_question_not_answered_prints_the_bots_sentence(index_dir: Path) -> None:
    """Below the threshold `ask` says what the bot would say; `--json` marks it not answered
    and still shows what it would have quoted."""
    args = ["--no-rerank", "--min-score", "1.01", "--index", str(index_dir)]
    code, output = _invoke("ask", "Who won the match?", *args)
    assert code == 0 and output.startswith("I couldn't find that in the articles.")
    code, output = _invoke("ask", "--json", "Who won the match?", *args)
    record = json.loads(output)
    assert record["answered"] is False and record["hits"]


@pytest.mark.parametrize(
    ("logger", "level", "asked", "shown"),
    [
        ("bm25s", logging.DEBUG, "WARNING", False),  # bm25s sets its logger to DEBUG at import
        ("bm25s", logging.WARNING, "WARNING", True),
        ("bm25s", logging.DEBUG, "DEBUG", True),
        ("telegram.ext.Updater", logging.INFO, "WARNING", False),
        ("bot.feeds", logging.INFO, "WARNING", True),  # the project's loggers keep their level
    ],
)
def test_libraries_log_only_at_the_level_asked_for(
    logger: str, level: int, asked: str, shown: bool
) -> None:
    """Whatever level a library gives its own logger, its lines reach the log only at
    --log-level or above; the project's own loggers decide for themselves."""
    record = logging.LogRecord(logger, level, __file__, 1, "a line", None, None)
    assert LibraryLevelFilter(logging.getLevelName(asked)).filter(record) is shown


class _NewKindOfFetchError(errors.FetchError):
    """A subclass the table of fixes does not list."""


@pytest.mark.parametrize(
    ("error", "fix_of"),
    [
        (errors.OnnxExportError("Exporting failed"), errors.EncoderLoadError),
        (
            errors.UnsafeAddressError("refused"),
            errors.UnsafeAddressError,
        ),  # its own, not FetchError's
        (_NewKindOfFetchError("odd"), errors.FetchError),
    ],
)
def test_an_error_without_a_fix_of_its_own_gets_its_base_classes_fix(
    error: errors.NewsqaError, fix_of: type[errors.NewsqaError]
) -> None:
    """The fix named for an error is its class's, else that of the nearest base class."""
    expected = cli._FIXES[fix_of].format(data="data", model=DEFAULT_MODEL, store="")
    assert cli.explain(error, Path("data"), DEFAULT_MODEL, None) == f"{error}; {expected}"
