"""Starting the bot: Telegram and the listening ports are checked first, so that a failure is
one sentence, a passing network fault is waited out, and a second poller stops this one."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Iterator

from telegram import Update
from telegram.error import BadRequest, Conflict, InvalidToken, NetworkError
from telegram.ext import Application, ApplicationHandlerStop, ContextTypes

from embeddings import (
    errors,
)

log = logging.getLogger(__name__)

FIRST_PAUSE = 1.0
LONGEST_PAUSE = 30.0
START_TRIES = 8  # about two minutes of waiting before the start is given up
CONFLICT = "newsqa.conflict"  # the bot_data key that records a 409 from getUpdates


def pauses(first: float = FIRST_PAUSE, longest: float = LONGEST_PAUSE) -> Iterator[float]:
    """Exponential back-off: first, twice that, ... never more than `longest`."""
    pause = first
    while True:
        yield min(pause, longest)
        pause *= 2


def check_port(host: str, port: int, option: str) -> None:
    """Raise PortInUseError when `port` is taken; checked before Telegram is told to send there."""
    try:
        socket.create_server((host, port)).close()
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        raise errors.PortInUseError(
            f"Port {port} on {host} ({option}) is already in use"
        ) from error


async def reach_telegram(
    application: Application,  # type: ignore[type-arg]
    where: str,
    webhook: tuple[str, str] | None = None,
    tries: int = START_TRIES,
    first_pause: float = FIRST_PAUSE,
) -> None:
    """getMe (and setWebhook with `webhook` = (url, secret)) until Telegram answers.

    A network fault, a timeout or a 5xx is tried again after a growing pause, each try logged
    as one line (the first as a warning, the rest at INFO); a rejected token or webhook
    address will not get better, so it raises at once.
    """
    backoff = pauses(first_pause)
    for attempt in range(1, tries + 1):
        try:
            await _introduce(application, webhook)
            return
        except InvalidToken as error:
            raise errors.TokenRejectedError("Telegram rejected the bot token (401)") from error
        except BadRequest as error:
            if webhook is None:
                raise
            raise errors.WebhookRefusedError(
                f"Telegram refused the webhook URL {webhook[0]}: {error.message}"
            ) from error
        except NetworkError as error:  # connection refused, DNS, timeouts, 5xx
            log.debug("Telegram did not answer", exc_info=error)
            if attempt == tries:
                raise errors.TelegramUnreachableError(
                    f"Telegram did not answer at {where} in {tries} tries ({error.message})"
                ) from error
            pause = next(backoff)
            # The first miss is a warning; the tries after it are INFO, so an outage costs the
            # default log two lines (this one and the last word), and --log-level info shows all.
            log.log(
                logging.WARNING if attempt == 1 else logging.INFO,
                "Telegram did not answer at %s (%s); trying again in %.0f s",
                where, error.message, pause,
            )  # fmt: skip
            await asyncio.sleep(pause)


async def _introduce(application: Application, webhook: tuple[str, str] | None) -> None:  # type: ignore[type-arg]
    """One try: getMe (by initialising the application) and, for a webhook, setWebhook."""
    await application.initialize()  # a no-op once it has succeeded
    if webhook is not None:
        url, secret = webhook
        await application.bot.set_webhook(
            url, secret_token=secret, allowed_updates=Update.ALL_TYPES
        )


async def stop_on_conflict(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """At a 409 from getUpdates, stop: two pollers would each get half the updates, forever."""
    if not isinstance(context.error, Conflict):
        return
    log.debug("getUpdates conflict", exc_info=context.error)
    context.bot_data[CONFLICT] = context.error
    logging.getLogger("telegram.ext.Updater").addFilter(_conflict_to_debug)
    context.application.stop_running()
    raise ApplicationHandlerStop


def _conflict_to_debug(record: logging.LogRecord) -> bool:
    """Demote the Updater's traceback when its last getUpdates, at the stop, meets the other
    poller too: the one line this process ends with already says so."""
    error = record.exc_info[1] if record.exc_info else None
    if not isinstance(error, Conflict):
        return True
    record.levelno, record.levelname = logging.DEBUG, "DEBUG"
    return logging.getLogger().isEnabledFor(logging.DEBUG)


def raise_if_conflicted(application: Application) -> None:  # type: ignore[type-arg]
    """After polling stopped: raise PollingConflictError if a second poller was the reason."""
    conflict = application.bot_data.get(CONFLICT)
    if conflict is not None:
        raise errors.PollingConflictError(
            "Another process is polling Telegram with this bot token (409 Conflict)"
        ) from conflict
