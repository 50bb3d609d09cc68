"""--log-format json: every line one JSON object, one line per question with its decision and
latency, the chat hashed, no question text below DEBUG and never the token."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.logs import JsonFormatter, RedactingFormatter
from embeddings.articles import read_articles
from embeddings.index.build import build_index
from testbed.fake_encoder import FakeEncoder
from testbed.telegram_server import TelegramServer
from tests.bots import free_port, handled, start_bot, stop_bot, write_news
from tests.conftest import logging_into

CHAT = 5151
QUESTIONS = ["How far did the river rise overnight?", "Who won the cup final?", "?!"]


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The root logger at INFO, as JSON (token redacted as in `newsqa bot`), into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter(JsonFormatter(), [TelegramServer().token]))
    with logging_into(handler, logging.INFO):
        yield stream


async def test_each_question_is_one_json_line_without_its_text(
    data_dir: Path, tmp_path: Path, json_log: io.StringIO
) -> None:
    """Three questions at INFO: three "question" objects with decision, latency and a hashed
    chat; every line parses; no question text, chat id or token anywhere."""
    write_news(data_dir)
    async with TelegramServer() as server:
        _, application = await start_bot(server, data_dir, tmp_path / "index", FakeEncoder())
        try:
            for count, question in enumerate(QUESTIONS, start=1):
                asked = server.user_message(CHAT, question)
                await server.wait_for_messages(CHAT, count, timeout=20)
                await handled(application).wait(asked)  # its line is logged after the reply
        finally:
            await stop_bot(application)
    text = json_log.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    questions = [line for line in lines if line["event"] == "question"]
    assert [line["decision"] for line in questions] == ["answered", "answered", "declined"]
    assert all(line["level"] == "INFO" and line["latency"] >= 0 for line in questions)
    assert len({line["chat"] for line in questions}) == 1
    assert all(question not in text for question in QUESTIONS[:2])
    assert str(CHAT) not in text
    assert server.token not in text and server.token.split(":")[1] not in text


async def test_newsqa_bot_logs_json_lines_only(data_dir: Path, tmp_path: Path) -> None:
    """`newsqa --log-format json --log-level INFO bot` through a retried start: every stderr
    line is a JSON object, the retry one included, and the token is in none."""
    build_index(read_articles(data_dir).articles, FakeEncoder("no-such-model"), tmp_path / "index")
    port = free_port()
    token = TelegramServer().token
    env = {**os.environ, "TELEGRAM_BOT_TOKEN": token}
    env["TELEGRAM_API_URL"] = f"http://127.0.0.1:{port}/bot"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--log-format", "json", "--log-level", "INFO", "bot",
        "--model", "no-such-model", "--backend", "torch", "--index", str(tmp_path / "index"),
        env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    first = b""
    while b"trying again in" not in first:  # the start's own retry, after PTB's quick ones
        first += await asyncio.wait_for(process.stderr.readline(), 60)
    async with TelegramServer(port=port) as server:
        try:
            await server.wait_for(lambda: bool(server.commands), timeout=60)
            server.user_message(CHAT, "/about")
            await server.wait_for_messages(CHAT, 1, timeout=20)
        finally:
            process.send_signal(signal.SIGTERM)
            _, rest = await asyncio.wait_for(process.communicate(), 30)
    text = (first + rest).decode()
    lines = [json.loads(line) for line in text.splitlines()]
    assert process.returncode == 0
    assert any("trying again in" in line["message"] for line in lines)
    assert all({"time", "level", "event", "message"} <= line.keys() for line in lines)
    assert token not in text and token.split(":")[1] not in text
