"""Two bot replicas behind one webhook URL, sharing one database: the same answers, buttons
that work whichever replica a press reaches, and one rate limit per user. Two Applications in
this process with the fake encoder, then two `newsqa bot` processes with the packaged model."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("psycopg", reason="the database tests need the postgres extra")

from telegram.ext import Application
from tornado.httpserver import HTTPServer

from bot.app import build_application
from bot.handlers import Handlers
from bot.messages import say
from bot.service import QAService
from bot.shared_memory import DatabaseButtons, DatabaseRateLimiter, SharedDatabase
from bot.webhook import Webhook, listen
from embeddings.articles import read_articles
from embeddings.encoders.base import DEFAULT_MODEL
from embeddings.encoders.onnx_export import default_export_folder
from embeddings.search.decision import Thresholds
from embeddings.stores import build_in_database, location_of
from testbed.articles import write_article
from testbed.fake_encoder import FakeEncoder
from testbed.telegram_server import SentMessage, TelegramServer
from tests.conftest import SEED_QUESTION
from tests.round_robin_proxy import RoundRobinProxy

ALICE = 1001
SECRET = "replicas-share-this-secret"


@dataclass(frozen=True)
class Replica:
    """One bot replica in this process: the application, its database and its webhook."""

    application: Application  # type: ignore[type-arg]
    database: SharedDatabase
    receiver: HTTPServer


@dataclass
class Replicas:
    """Two running replicas, the proxy in front of them, and the server they talk to."""

    server: TelegramServer
    proxy: RoundRobinProxy
    store: str
    data_dir: Path
    timeout: float = 10.0  # seconds to wait for each answer

    async def ask(self, chat_id: int, text: str) -> SentMessage:
        """Send a message through the webhook; the bot's next message in that chat."""
        before = len(self.server.messages(chat_id))
        self.server.user_message(chat_id, text)
        assert await self.server.deliver_updates() == [200]
        messages = await self.server.wait_for_messages(chat_id, before + 1, self.timeout)
        return messages[before]

    async def press(self, chat_id: int, message: SentMessage, text: str) -> None:
        """Press the button labelled `text` of a bot message."""
        data = next(b["callback_data"] for b in message.buttons if b["text"] == text)
        self.server.press_button(chat_id, message.message_id, data)
        assert await self.server.deliver_updates() == [200]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _start_replica(
    server: TelegramServer, store: str, index_dir: Path, webhook_url: str, port: int, limit: int
) -> Replica:
    """One replica as `newsqa bot --store` assembles it, listening for the webhook on `port`."""
    encoder = FakeEncoder()
    thresholds = Thresholds(calibrated=0.0, cosine=0.1)  # answer: these tests pin the bot
    service = QAService(location_of(index_dir, store), encoder, thresholds=thresholds)
    database = SharedDatabase.create(store)
    limiter = DatabaseRateLimiter(database, limit)
    handlers = Handlers(service, limiter=limiter, pages=DatabaseButtons(database))
    application = build_application(server.token, handlers, base_url=server.base_url)
    await application.initialize()
    await application.bot.set_webhook(webhook_url, secret_token=SECRET)
    await application.start()
    receiver = listen(application, Webhook(webhook_url, SECRET, "127.0.0.1", port))
    return Replica(application, database, receiver)


@pytest.fixture
async def replicas(
    data_dir: Path, tmp_path: Path, database_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Replicas]:
    """Two replicas over one database (the seed article plus one on rain) behind one proxy;
    `limit` questions a minute per user (0: none)."""
    write_article(data_dir, "rain.txt", "Heavy rain floods the valley",
                  "Heavy rain flooded the valley villages on Monday and the roads were closed.",
                  date="2024-05-02")  # fmt: skip
    build_in_database(read_articles(data_dir).articles, FakeEncoder(), database_url)
    limit = getattr(request, "param", 0)
    ports = [_free_port(), _free_port()]
    async with (
        TelegramServer() as server,
        RoundRobinProxy([f"http://127.0.0.1:{port}" for port in ports]) as proxy,
    ):
        started = [
            await _start_replica(
                server, database_url, tmp_path / "index", f"{proxy.url}/telegram", port, limit
            )
            for port in ports
        ]
        try:
            yield Replicas(server, proxy, database_url, data_dir)
        finally:
            for replica in started:
                replica.receiver.stop()
                await replica.application.stop()
                await replica.application.shutdown()
                await replica.database.close()


async def test_more_pressed_on_the_other_replica_shows_the_next_page(replicas: Replicas) -> None:
    """The answer comes from one replica; "More", "Back" and "Whole article", pressed on the
    others, page it and send the article."""
    reply = await replicas.ask(ALICE, "party building session rain")
    await replicas.press(ALICE, reply, "More »")
    server = replicas.server
    await server.wait_for(lambda: server.messages(ALICE)[-1].text.startswith("4. "))
    await replicas.press(ALICE, server.messages(ALICE)[-1], "« Back")
    await server.wait_for(lambda: server.messages(ALICE)[-1].text.startswith("1. "))
    assert server.messages(ALICE)[-1].text == reply.text
    await replicas.press(ALICE, server.messages(ALICE)[-1], "Article 1")
    [article] = (await server.wait_for_messages(ALICE, 2))[1:]
    assert article.text.startswith(reply.text.split("\n")[0].removeprefix("1. "))
    assert replicas.proxy.routed == [0, 1, 0, 1]
    assert not [a for a in server.callback_answers if a.get("text")]  # no "expired" notice


async def test_a_new_article_is_answered_by_both_replicas_without_restart(
    replicas: Replicas,
) -> None:
    """An article indexed into the database while both replicas run is quoted by each."""
    write_article(replicas.data_dir, "cup.txt", "Local team wins the cup",
                  "The local football team won the cup final after a penalty shootout.",
                  date="2024-06-10")  # fmt: skip
    build_in_database(read_articles(replicas.data_dir).articles, FakeEncoder(), replicas.store)
    first = await replicas.ask(ALICE, "Who won the cup final penalty shootout?")
    second = await replicas.ask(ALICE, "Who won the cup final penalty shootout?")
    assert replicas.proxy.routed == [0, 1]
    assert first.text.startswith("1. Local team wins the cup")
    assert second.text == first.text


@pytest.mark.parametrize("replicas", [2], indirect=True)
async def test_the_rate_limit_holds_across_replicas(replicas: Replicas) -> None:
    """Two questions a minute: the third is refused, whichever replica it reaches."""
    for _ in range(2):
        assert (await replicas.ask(ALICE, "heavy rain")).text.startswith("1. ")
    refusal = await replicas.ask(ALICE, "heavy rain")
    assert refusal.text in {say("too_many", "en", seconds=s) for s in (58, 59, 60)}
    assert replicas.proxy.routed == [0, 1, 0]


# --- real processes: `newsqa index` and two `newsqa bot` replicas, the packaged model -------------


async def _listening(port: int, timeout: float = 60.0) -> None:  # noqa: ASYNC109
    """Wait until something accepts connections on 127.0.0.1:`port`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)  # polling: nothing signals when a process starts listening
        else:
            writer.close()
            return


async def _newsqa(*arguments: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *arguments, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _index(store: str, data_dir: Path, index_dir: Path) -> None:
    """`newsqa index --store`, as an operator runs it while the bots serve."""
    process = await _newsqa(
        "index", "--store", store, "--data", str(data_dir), "--index", str(index_dir),
        env=dict(os.environ),
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=180)
    assert process.returncode == 0, stderr.decode()[-2000:]


async def _replica(
    store: str, index_dir: Path, webhook_url: str, port: int, env: dict[str, str]
) -> asyncio.subprocess.Process:
    """`newsqa bot --store` in webhook mode on `port`, three questions a minute per user."""
    return await _newsqa(
        "bot", "--store", store, "--index", str(index_dir), "--rate-limit", "3",
        "--webhook-url", webhook_url, "--webhook-secret", SECRET,
        "--webhook-listen", "127.0.0.1", "--webhook-port", str(port), env=env,
    )  # fmt: skip


@pytest.mark.model
async def test_two_bot_processes_behind_one_webhook_serve_one_database(
    data_dir: Path, tmp_path: Path, database_url: str, onnx_export: Path
) -> None:
    """Two `newsqa bot --store` processes behind a round-robin proxy: "More" works on the other
    replica, an article indexed meanwhile is answered by both, and the rate limit is one."""
    index_dir = tmp_path / "index"  # with --store, only the model's export lives here
    shutil.copytree(onnx_export, default_export_folder(index_dir, DEFAULT_MODEL))
    await _index(database_url, data_dir, index_dir)
    ports = [_free_port(), _free_port()]
    async with (
        TelegramServer() as server,
        RoundRobinProxy([f"http://127.0.0.1:{port}" for port in ports]) as proxy,
    ):
        env = {
            **os.environ,
            "TELEGRAM_BOT_TOKEN": server.token,
            "TELEGRAM_API_URL": server.base_url,
        }
        bots = [
            await _replica(database_url, index_dir, f"{proxy.url}/telegram", port, env)
            for port in ports
        ]
        try:
            for port in ports:
                await _listening(port, timeout=180)
            replicas = Replicas(server, proxy, database_url, data_dir, timeout=60)
            reply = await replicas.ask(ALICE, SEED_QUESTION)
            assert reply.text.startswith("1. Chongqing Holds Third Plenary Session")
            await replicas.press(ALICE, reply, "More »")
            await server.wait_for(lambda: server.messages(ALICE)[-1].text.startswith("4. "), 30)
            write_article(data_dir, "cup.txt", "Local team wins the cup final",
                          "The local football team won the cup final after a penalty shootout "
                          "in front of a packed stadium on Saturday.", date="2024-06-10")  # fmt: skip
            await _index(database_url, data_dir, index_dir)
            answers = [await replicas.ask(ALICE, "Who won the cup final?") for _ in range(2)]
            refusal = await replicas.ask(ALICE, "Who won the cup final?")
        finally:
            for process in bots:
                process.send_signal(signal.SIGTERM)
            logs = [await asyncio.wait_for(p.communicate(), timeout=30) for p in bots]
    assert proxy.routed == [0, 1, 0, 1, 0]
    assert [a.text.split("\n")[0] for a in answers] == ["1. Local team wins the cup final"] * 2
    assert refusal.text in {say("too_many", "en", seconds=s) for s in range(1, 61)}
    for process, (stdout, stderr) in zip(bots, logs, strict=True):
        assert process.returncode == 0, stderr.decode()[-3000:]
        assert server.token not in (stdout + stderr).decode()
