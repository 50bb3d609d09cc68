"""Logging for the command line: set up once, and never showing the bot token."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "<token>"


def configure_logging(level: str) -> None:
    """Log to stderr at `level`; keep httpx quiet, since its request URLs contain the token."""
    logging.basicConfig(level=level.upper(), format=FORMAT)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


class RedactingFormatter(logging.Formatter):
    """Formats like another formatter, then blanks out secrets, tracebacks included."""

    def __init__(self, inner: logging.Formatter, secrets: list[str]) -> None:
        super().__init__()
        self._inner = inner
        self._secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        text = self._inner.format(record)
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


def redact(secret: str) -> None:
    """Make every handler of the root logger blank out `secret` from now on."""
    for handler in logging.getLogger().handlers:
        inner = handler.formatter or logging.Formatter(FORMAT)
        handler.setFormatter(RedactingFormatter(inner, [secret]))
