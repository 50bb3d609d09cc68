"""What the bot counts and times, in a Prometheus registry of its own, and the log line of
each question."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from bot.service import QAService

log = logging.getLogger(__name__)

Decision = Literal["answered", "declined", "rate_limited"]
# Questions take from a few milliseconds (a refusal) to a few seconds (reranking on a busy CPU).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Chat ids are small integers: hashed without a secret, they could be found by trying them all.
_CHAT_KEY = secrets.token_bytes(16)


def chat_hash(chat_id: int) -> str:
    """A chat id the logs can group by but not read back (stable within this process)."""
    return hashlib.blake2b(str(chat_id).encode(), key=_CHAT_KEY, digest_size=6).hexdigest()


class Metrics:
    """The bot's counters and the question latency histogram, in a registry per process, so
    that two bots in one test process count apart."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.questions = self._counter("newsqa_questions", "Questions by decision", "decision")
        self.buttons = self._counter("newsqa_button_presses", "Button presses", "button")
        self.errors = self._counter("newsqa_errors", "Errors while handling updates", "kind")
        self.retries = self._counter("newsqa_bot_api_retries", "Bot API calls sent again", "method")
        self.flood_waits = Counter(
            "newsqa_bot_api_flood_waits", "429 answers waited out", registry=self.registry
        )
        self.latency = Histogram(
            "newsqa_question_seconds",
            "Time from a question to its reply",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def _counter(self, name: str, documentation: str, label: str) -> Counter:
        return Counter(name, documentation, [label], registry=self.registry)

    def question(self, decision: Decision, started: float, chat_id: int) -> None:
        """Count and time one question, and log it in one line (its text is logged at DEBUG)."""
        seconds = time.perf_counter() - started
        self.questions.labels(decision).inc()
        self.latency.observe(seconds)
        chat = chat_hash(chat_id)
        log.info(
            "Question in chat %s %s in %.3f s", chat, decision.replace("_", "-"), seconds,
            extra={"event": "question", "chat": chat, "latency": round(seconds, 4),
                   "decision": decision},
        )  # fmt: skip

    def watch_index(self, service: QAService) -> None:
        """Export the generation, size and age of the index `service` answers from."""
        self.registry.register(IndexCollector(service))


class IndexCollector(Collector):
    """The index in use, read at each scrape (a rebuild switches it without a restart)."""

    def __init__(self, service: QAService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        index = self._service.index
        info = InfoMetricFamily("newsqa_index", "The index generation in use")
        info.add_metric([], {"generation": str(index.generation), "model": index.model})
        yield info
        yield GaugeMetricFamily("newsqa_index_passages", "Passages in the index", len(index))
        yield GaugeMetricFamily(
            "newsqa_index_age_seconds", "Seconds since the index was built", _age(index.built_at)
        )


def _age(built_at: str) -> float:
    """Seconds since an ISO time (naive times are UTC); 0 when it cannot be read."""
    try:
        built = dt.datetime.fromisoformat(built_at)
    except ValueError:
        return 0.0
    if built.tzinfo is None:
        built = built.replace(tzinfo=dt.UTC)
    return max(0.0, (dt.datetime.now(dt.UTC) - built).total_seconds())
