"""/healthz and /metrics on a port of their own, served from a thread beside the bot."""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from embeddings import (
    FolderLocation,
    NewsqaError,
    PortInUseError,
)

if TYPE_CHECKING:
    from bot.metrics import Metrics
    from bot.service import QAService

log = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class Health:
    """Whether the bot can answer: its index is readable and Telegram has answered getMe."""

    def __init__(self, service: QAService) -> None:
        self.service = service
        self.telegram_answered = False

    def reasons(self) -> list[str]:
        """What keeps the bot from answering; empty when it is healthy."""
        reasons = [] if self.telegram_answered else ["Telegram has not answered getMe yet"]
        if not self._index_readable():
            reasons.append("the index cannot be read")
        return reasons

    def _index_readable(self) -> bool:
        location = self.service.location
        try:
            generation = location.current()
        except (NewsqaError, OSError):
            return False
        # A folder without a current generation has lost its index; a database answers None.
        return generation is not None or not isinstance(location, FolderLocation)


class _Quiet(WSGIRequestHandler):
    """No access log: scrapes every few seconds would drown the bot's own lines."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_monitoring(host: str, port: int, health: Health, metrics: Metrics) -> ThreadingWSGIServer:
    """Serve /healthz (200 or 503 with the reasons) and /metrics until the process ends."""
    scrape = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/healthz":
            return scrape(environ, start_response)  # type: ignore[no-any-return]
        reasons = health.reasons()
        status = "503 Service Unavailable" if reasons else "200 OK"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [("; ".join(reasons) or "ok").encode() + b"\n"]

    try:
        server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_Quiet)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        raise PortInUseError(f"Port {port} on {host} (--metrics-port) is already in use") from error
    threading.Thread(target=server.serve_forever, name="monitoring", daemon=True).start()
    log.info("Serving /healthz and /metrics on %s:%d", host, port)
    return server


def start_monitoring(
    host: str, port: int | None, service: QAService, metrics: Metrics
) -> Callable[[], None]:
    """Serve /healthz and /metrics when `port` is given; the callback marks Telegram reached."""
    health = Health(service)
    if port is not None:
        metrics.watch_index(service)
        serve_monitoring(host, port, health, metrics)

    def telegram_answered() -> None:
        health.telegram_answered = True

    return telegram_answered
