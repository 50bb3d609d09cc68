"""/healthz and /metrics: health that follows Telegram and the index, counters that move by
exactly the questions asked, read back with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bot.health import Health, serve_monitoring
from embeddings.articles import read_articles
from embeddings.index.build import build_index
from embeddings.index.layout import CURRENT
from testbed.fake_encoder import FakeEncoder
from testbed.telegram_server import TelegramServer
from tests.bots import free_port, handled, start_bot, stop_bot, write_news

CHAT = 4242


def _get(port: int, path: str) -> tuple[int, str]:
    """Status and body of a GET on 127.0.0.1."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


async def _status(port: int, path: str = "/healthz") -> int:
    return (await asyncio.to_thread(_get, port, path))[0]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_healthz_is_503_until_telegram_answers_then_200(
    data_dir: Path, tmp_path: Path
) -> None:
    """`newsqa bot --metrics-port`: 503 while Telegram is unreachable, 200 once getMe answered."""
    build_index(read_articles(data_dir).articles, FakeEncoder("no-such-model"), tmp_path / "index")
    api_port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "TELEGRAM_BOT_TOKEN": TelegramServer().token,
        "TELEGRAM_API_URL": f"http://127.0.0.1:{api_port}/bot",
        "NEWSQA_METRICS_PORT": str(metrics_port),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "bot", "--model", "no-such-model", "--backend", "torch",
        "--index", str(tmp_path / "index"),
        env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        await asyncio.wait_for(process.stderr.readline(), 60)  # the first retry: still no Telegram
        assert await _status(metrics_port) == 503
        async with TelegramServer(port=api_port) as server:
            await server.wait_for(lambda: bool(server.commands), timeout=60)
            assert await _status(metrics_port) == 200
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), 30)


async def test_healthz_is_503_while_the_index_cannot_be_read(
    data_dir: Path, tmp_path: Path
) -> None:
    """An index folder that lost its CURRENT pointer turns /healthz to 503, and back to 200."""
    write_news(data_dir)
    async with TelegramServer() as server:
        handlers, application = await start_bot(server, data_dir, tmp_path / "index", FakeEncoder())
        port = free_port()
        health = Health(handlers.service)
        health.telegram_answered = True
        monitoring = serve_monitoring("127.0.0.1", port, health, handlers.metrics)
        try:
            assert await _status(port) == 200
            current = tmp_path / "index" / CURRENT
            pointer = current.read_text()
            current.unlink()
            assert await _status(port) == 503
            current.write_text(pointer)
            assert await _status(port) == 200
        finally:
            monitoring.shutdown()
            await stop_bot(application)


async def test_metrics_count_exactly_the_questions_asked(data_dir: Path, tmp_path: Path) -> None:
    """Two answered questions, one declined and a button press move the counters by exactly
    that; the latency histogram counts three; the index gauges describe the index."""
    write_news(data_dir)
    async with TelegramServer() as server:
        handlers, application = await start_bot(server, data_dir, tmp_path / "index", FakeEncoder())
        handlers.metrics.watch_index(handlers.service)
        port = free_port()
        monitoring = serve_monitoring("127.0.0.1", port, Health(handlers.service), handlers.metrics)
        try:
            before = _samples((await asyncio.to_thread(_get, port, "/metrics"))[1])
            asked = []
            for count, question in enumerate(
                ["How far did the river rise?", "Who won the cup final?", "?!"], start=1
            ):
                asked.append(server.user_message(CHAT, question))
                await server.wait_for_messages(CHAT, count, timeout=20)
            [first, *_] = server.messages(CHAT)
            pressed = server.press_button(CHAT, first.message_id, first.callback_data[0])
            # The counters move right after each reply is sent.
            await handled(application).wait(*asked, pressed, timeout=20)
            after = _samples((await asyncio.to_thread(_get, port, "/metrics"))[1])
        finally:
            monitoring.shutdown()
            await stop_bot(application)

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("newsqa_questions_total", decision="answered") == 2
    assert moved("newsqa_questions_total", decision="declined") == 1
    assert moved("newsqa_questions_total", decision="rate_limited") == 0
    assert moved("newsqa_question_seconds_count") == 3
    assert sum(moved("newsqa_button_presses_total", button=b) for b in ("page", "article")) == 1
    assert after[("newsqa_index_passages", ())] == len(handlers.service.index)
    assert after[("newsqa_index_age_seconds", ())] >= 0
