"""Receiving updates by webhook: Telegram POSTs each one to us, checked by its secret token.

PTB's own webhook server answers 400 to an update it cannot read (a field missing, or a shape
from a newer Bot API), and Telegram then delivers that update again and again before the
ones after it, so every user waits. This receiver, PTB's documented custom-webhook route
(`Application.start` without the updater), cuts such an update down to its id as the polling
path does (`bot.updates.readable`): one log line, a 200, and the next update flows.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import signal
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import tornado.httpserver
import tornado.web
from telegram import Bot, Update
from telegram.ext import Application

from bot.updates import readable

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
Deliver = Callable[[Update], Awaitable[None]]


@dataclass(frozen=True)
class Webhook:
    """Where Telegram delivers updates in webhook mode, and the secret it must present."""

    url: str
    secret: str
    listen: str = "0.0.0.0"
    port: int = 8443
    path: str = "telegram"


class UpdateReceiver(tornado.web.RequestHandler):
    """POST /<path>: one update, taken when it carries the secret token, else refused."""

    def initialize(self, bot: Bot, secret: str, deliver: Deliver) -> None:
        self.bot, self.secret, self.deliver = bot, secret, deliver

    async def post(self) -> None:
        presented = self.request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(presented.encode(), self.secret.encode()):
            raise tornado.web.HTTPError(403)
        try:
            data = json.loads(self.request.body)
        except ValueError as error:
            raise tornado.web.HTTPError(400, reason="The body is not JSON") from error
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            raise tornado.web.HTTPError(400, reason="The body is not an update")
        await self.deliver(Update.de_json(readable(data), self.bot))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """A refused request is the sender's mistake: one line at INFO, not a traceback."""
        if isinstance(value, tornado.web.HTTPError):
            log.info("Refused a webhook request: %s", value)
        else:
            super().log_exception(typ, value, tb)


def listen(application: Application, webhook: Webhook) -> tornado.httpserver.HTTPServer:  # type: ignore[type-arg]
    """Start taking updates at `webhook.path` on `webhook.listen`:`webhook.port`."""
    routes = [(
        rf"/{webhook.path.strip('/')}/?",
        UpdateReceiver,
        {"bot": application.bot, "secret": webhook.secret, "deliver": application.update_queue.put},
    )]  # fmt: skip
    server = tornado.httpserver.HTTPServer(
        tornado.web.Application(routes, log_function=_log_request)
    )
    server.listen(webhook.port, webhook.listen)
    return server


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """Each request at DEBUG: tornado's WARNING for a refused one would repeat our INFO line."""
    request = handler.request
    log.debug("%d %s %s", handler.get_status(), request.method, request.uri)


async def serve(application: Application, webhook: Webhook) -> None:  # type: ignore[type-arg]
    """Run the (initialised) application on the webhook until SIGINT or SIGTERM, with PTB's
    start and stop hooks in PTB's order."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(number, stopping.set)
    await application.initialize()  # a no-op after startup.reach_telegram
    if application.post_init is not None:
        await application.post_init(application)
    server = listen(application, webhook)
    try:
        await application.start()
        await stopping.wait()
    finally:
        server.stop()
        if application.running:
            await application.stop()
        if application.post_stop is not None:
            await application.post_stop(application)
        await application.shutdown()
        if application.post_shutdown is not None:
            await application.post_shutdown(application)
