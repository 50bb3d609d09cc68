"""Assembling the Telegram application and running it by long polling or webhook."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from telegram import BotCommand, Update
from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut
from telegram.ext import (
    AIORateLimiter,
    Application,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot import startup
from bot.handlers import Handlers
from bot.metrics import Metrics
from bot.updates import ReadableUpdates
from bot.webhook import Webhook, serve

log = logging.getLogger(__name__)

COMMANDS = [
    BotCommand("start", "What I know and how to ask"),
    BotCommand("help", "Example questions"),
    BotCommand("ask", "Ask a question (in groups)"),
    BotCommand("about", "Articles, passages, model and index date"),
]


# Pauses before sending a call again after a server error or a failed connection.
RETRY_PAUSES = (0.5, 1.0, 2.0)
CHAT_ACTION = "sendChatAction"  # the Bot API method behind "typing..."


class RetryingRateLimiter(AIORateLimiter):
    """PTB's flood-limit handling (which waits out 429s), plus retries after server errors.

    A call that Telegram answered with a 5xx, or whose connection failed before an answer, is
    sent again after a pause: it almost certainly did not take effect. A timeout is not retried,
    because Telegram may have acted on the call, and a second try could deliver an answer twice.
    getUpdates is left to the retry loop of PTB's updater.

    "typing..." goes straight out, once: Telegram's flood limits count messages, and queueing
    chat actions with the answers would halve how many answers a busy bot sends a second.
    """

    def __init__(self, metrics: Metrics | None = None, **limits: Any) -> None:
        """`limits` are AIORateLimiter's (max_retries, overall_max_rate...)."""
        super().__init__(**{"max_retries": 3, **limits})
        self.metrics = metrics or Metrics()

    async def _run_request(self, *args: Any, **kwargs: Any) -> Any:
        """Count the 429s PTB waits out (it sends again after Telegram's retry_after)."""
        try:
            return await super()._run_request(*args, **kwargs)
        except RetryAfter:
            self.metrics.flood_waits.inc()
            raise

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        if endpoint == CHAT_ACTION:
            return await callback(*args, **kwargs)
        for pause in (*RETRY_PAUSES, None):
            try:
                return await super().process_request(
                    callback, args, kwargs, endpoint, data, rate_limit_args
                )
            except (BadRequest, TimedOut):
                raise
            except NetworkError as error:
                if pause is None or endpoint == "getUpdates":
                    raise
                log.info("Sending %s again in %.1f s after: %s", endpoint, pause, error)
                self.metrics.retries.labels(endpoint).inc()
                await asyncio.sleep(pause)
        raise AssertionError("unreachable: the last try returns or raises")


Background = Callable[[], Coroutine[Any, Any, None]]


def build_application(
    token: str,
    handlers: Handlers,
    *,
    base_url: str | None = None,
    background: Background | None = None,
) -> Application:  # type: ignore[type-arg]
    """The application with every handler registered; `base_url` points at another Bot API;
    `background` (such as the feed watcher) runs beside the bot from start to stop."""
    tasks: list[asyncio.Task[None]] = []
    builder = (
        Application.builder()
        .token(token)
        .rate_limiter(RetryingRateLimiter(handlers.metrics))
        .get_updates_request(ReadableUpdates())
        .concurrent_updates(True)
        .post_init(_post_init(handlers, background, tasks))
        .post_stop(_post_stop(tasks))
    )
    if base_url:
        builder = builder.base_url(base_url).base_file_url(base_url.replace("/bot", "/file/bot"))
    application = builder.build()
    register(application, handlers)
    return application


def register(application: Application, handlers: Handlers) -> None:  # type: ignore[type-arg]
    """Add the handlers: the chat gate first, then commands, buttons, messages, errors."""
    application.add_error_handler(startup.stop_on_conflict)  # before the one that apologises
    application.add_handler(TypeHandler(Update, handlers.gatekeeper), group=-1)
    new_messages = filters.UpdateType.MESSAGE
    application.add_handler(CommandHandler(["start", "help"], handlers.start, new_messages))
    application.add_handler(CommandHandler("about", handlers.about, new_messages))
    application.add_handler(CommandHandler("ask", handlers.ask, new_messages))
    application.add_handler(CommandHandler("add", handlers.add, new_messages))
    application.add_handler(CallbackQueryHandler(handlers.page, pattern=r"^p:"))
    application.add_handler(CallbackQueryHandler(handlers.article, pattern=r"^a:"))
    application.add_handler(
        MessageHandler(new_messages & filters.TEXT & ~filters.COMMAND, handlers.question)
    )
    application.add_handler(MessageHandler(new_messages & filters.Document.ALL, handlers.document))
    application.add_handler(
        MessageHandler(new_messages & ~filters.TEXT & ~filters.StatusUpdate.ALL, handlers.not_text)
    )
    application.add_error_handler(handlers.error)


def _post_init(  # type: ignore[no-untyped-def]
    handlers: Handlers, background: Background | None, tasks: list[asyncio.Task[None]]
):
    async def post_init(application: Application) -> None:  # type: ignore[type-arg]
        """Show the command menu, start the background task, and reload the index on SIGHUP."""
        await application.bot.set_my_commands(COMMANDS)
        if background is not None:
            tasks.append(asyncio.create_task(background(), name="background"))
        try:
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, handlers.service.reload_if_changed
            )
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / no signals
            log.debug("SIGHUP reloading is not available here")

    return post_init


def _post_stop(tasks: list[asyncio.Task[None]]):  # type: ignore[no-untyped-def]
    async def post_stop(application: Application) -> None:  # type: ignore[type-arg]
        """Cancel the background task and wait for it to end."""
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    return post_stop


def run(
    application: Application,  # type: ignore[type-arg]
    webhook: Webhook | None,
    where: str = "https://api.telegram.org",
    ready: Callable[[], None] = lambda: None,
) -> None:
    """Serve until SIGINT/SIGTERM: long polling, or a webhook checked by its secret token.

    Telegram is reached first (waiting out network faults) on the loop PTB then runs on, so
    that the application PTB starts is already initialised; `ready` is called then. Raises
    the library's errors with the reason a start failed, or polling stopped for a second
    poller.
    """
    if webhook is not None:
        startup.check_port(webhook.listen, webhook.port, "--webhook-port")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # run_polling takes the current loop
    hook = (webhook.url, webhook.secret) if webhook else None
    try:
        loop.run_until_complete(startup.reach_telegram(application, where, hook))
    except BaseException:
        loop.run_until_complete(application.shutdown())
        loop.close()
        raise
    ready()
    if webhook is None:
        application.run_polling(allowed_updates=Update.ALL_TYPES, bootstrap_retries=3)
        startup.raise_if_conflicted(application)
        return
    loop.run_until_complete(serve(application, webhook))
    loop.close()
