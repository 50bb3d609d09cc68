"""Logging for the command line: set up once, and never showing the bot token."""

from __future__ import annotations

import datetime as dt
import json
import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "<token>"
# The fields a line may carry beyond the message (see bot.metrics: one line per question).
FIELDS = ("event", "chat", "latency", "decision")
# The project's own loggers: each keeps the level it is given (the watcher logs bot.feeds at INFO).
OWN_LOGGERS = ("newsqa", "bot", "embeddings", "training")


def configure_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr at `level`, as text or one JSON object per line; keep httpx quiet, since
    its request URLs contain the token."""
    logging.basicConfig(level=level.upper(), format=FORMAT)
    for handler in logging.getLogger().handlers:
        if log_format == "json":
            handler.setFormatter(JsonFormatter())
        for old in [f for f in handler.filters if isinstance(f, LibraryLevelFilter)]:
            handler.removeFilter(old)
        handler.addFilter(LibraryLevelFilter(logging.getLevelName(level.upper())))
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


class LibraryLevelFilter(logging.Filter):
    """Holds other packages' records to the level asked for, even from a library that sets its
    own logger's level (bm25s sets DEBUG when imported)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level or record.name.split(".")[0] in OWN_LOGGERS


def logs_json() -> bool:
    """Whether the log is one JSON object per line (--log-format json), redacted or not."""
    return any(_is_json(h.formatter) for h in logging.getLogger().handlers)


def _is_json(formatter: logging.Formatter | None) -> bool:
    while isinstance(formatter, RedactingFormatter):
        formatter = formatter.inner
    return isinstance(formatter, JsonFormatter)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, message, the question fields,
    and the traceback as one string."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, "event", "log"),
            "message": record.getMessage(),
        }
        line.update({name: getattr(record, name) for name in FIELDS[1:] if hasattr(record, name)})
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class RedactingFormatter(logging.Formatter):
    """Formats like another formatter, then blanks out secrets, tracebacks included."""

    def __init__(self, inner: logging.Formatter, secrets: list[str]) -> None:
        super().__init__()
        self.inner = inner
        self._secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


def redact(secret: str) -> None:
    """Make every handler of the root logger blank out `secret` from now on."""
    for handler in logging.getLogger().handlers:
        inner = handler.formatter or logging.Formatter(FORMAT)
        handler.setFormatter(RedactingFormatter(inner, [secret]))
