"""Running the bot in tests: articles, start and stop against the local Bot API server, a clock
moved by hand, and the signal that the bot is done with an update."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from pathlib import Path

from telegram import Update
from telegram.ext import Application, ContextTypes, TypeHandler

from bot.app import build_application
from bot.handlers import Handlers
from bot.service import QAService
from embeddings.articles import read_articles
from embeddings.index.build import build_index
from embeddings.search.decision import Thresholds
from embeddings.search.reranker import Reranker
from embeddings.stores import build_in_database, location_of
from testbed.articles import write_article
from testbed.fake_encoder import FakeEncoder
from testbed.telegram_server import SentMessage, TelegramServer

# After every handler group the bot registers (bot.app.register uses -1 and 0).
LAST_GROUP = 1_000


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Handled:
    """The updates an application is done with. PTB runs a handler in `LAST_GROUP` after the
    bot's own handlers (and error handler) have finished with the same update, so a reply the
    bot was going to send for it has been sent by then. An update the chat gate stops never
    gets here."""

    def __init__(self) -> None:
        self.ids: set[int] = set()
        self._changed = asyncio.Event()

    async def record(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        self.ids.add(update.update_id)
        self._changed.set()

    async def wait(self, *updates: dict[str, object], timeout: float = 10) -> None:  # noqa: ASYNC109
        """Wait until the bot is done with each of `updates` (as the server queued them)."""
        wanted = {int(str(update["update_id"])) for update in updates}
        async with asyncio.timeout(timeout):
            while not wanted <= self.ids:
                self._changed.clear()
                await self._changed.wait()


def handled(application: Application) -> Handled:  # type: ignore[type-arg]
    """The record of the updates `application` (started by `start_bot`) is done with."""
    record: Handled = application.bot_data["handled"]
    return record


@dataclass
class Bot:
    """A running bot and the server it talks to."""

    server: TelegramServer
    handlers: Handlers
    application: Application  # type: ignore[type-arg]
    data_dir: Path
    index_dir: Path
    clock: Clock

    async def ask(self, chat_id: int, text: str, **kwargs: object) -> SentMessage:
        """Send a message and return the bot's next message in that chat."""
        before = len(self.server.messages(chat_id))
        self.server.user_message(chat_id, text, **kwargs)  # type: ignore[arg-type]
        return (await self.server.wait_for_messages(chat_id, before + 1, timeout=10))[before]

    @property
    def handled(self) -> Handled:
        return handled(self.application)


def write_news(data_dir: Path) -> None:
    """Two short dated articles beside the seed article: floods in May, a cup final in June."""
    write_article(data_dir, "rain.txt", "Heavy rain floods the valley",
                  "Heavy rain flooded the valley villages on Monday and the roads were closed to traffic for three days.",
                  "The mayor said the river rose two metres overnight and that rescue teams evacuated four hundred people.",
                  date="2024-05-02")  # fmt: skip
    write_article(data_dir, "cup.txt", "Local team wins the cup",
                  "The local football team won the cup final after a penalty shootout in front of a packed stadium.",
                  date="2024-06-10")  # fmt: skip


async def start_bot(
    server: TelegramServer,
    data_dir: Path,
    index_dir: Path,
    encoder: FakeEncoder,
    reranker: Reranker | None = None,
    store: str | None = None,
    **handler_args: object,
) -> tuple[Handlers, Application]:  # type: ignore[type-arg]
    """Index `data_dir` and start a bot polling `server`, answering whatever it finds."""
    articles = read_articles(data_dir).articles
    if store is None:
        build_index(articles, encoder, index_dir)
    else:
        build_in_database(articles, encoder, store)
    thresholds = Thresholds(calibrated=0.0, cosine=0.1)  # answer: these tests pin the bot
    location = location_of(index_dir, store)
    service = QAService(location, encoder, reranker=reranker, thresholds=thresholds)
    handlers = Handlers(service, **handler_args)  # type: ignore[arg-type]
    application = build_application(server.token, handlers, base_url=server.base_url)
    record = application.bot_data["handled"] = Handled()
    application.add_handler(TypeHandler(Update, record.record), group=LAST_GROUP)
    await application.initialize()
    assert application.post_init is not None
    await application.post_init(application)
    await application.start()
    assert application.updater is not None
    await application.updater.start_polling(poll_interval=0.0, timeout=1)
    return handlers, application


async def stop_bot(application: Application) -> None:  # type: ignore[type-arg]
    """Stop polling (if it still runs) and shut the application down."""
    assert application.updater is not None
    if application.updater.running:
        await application.updater.stop()
    await application.stop()
    await application.shutdown()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
