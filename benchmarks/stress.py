"""Stress: N simulated users asking at once through the loopback Bot API server.

Run from the repository root (the real packaged model, offline; the seed article in data/)::

    .venv/bin/python -m benchmarks.stress                       # 50 users, 4 questions each
    .venv/bin/python -m benchmarks.stress --no-rerank           # without the reranker
    .venv/bin/python -m benchmarks.stress --users 10 --fake     # the fake encoder, no model

The bot is the real PTB Application, talking HTTP to the local Bot API server
(testbed/telegram_server.py).
First one user asks `--baseline` questions one after another (the single-user latency); then
`--users` users each ask `--questions` questions, all users at once, each waiting for the
answer before asking again. Latency is from the update being queued to the answer arriving at
the server. The bot is the product's: the default encoder backend (int8 ONNX, exported into the
run's index folder) and the packaged reranker, every question answered (the decision's
threshold is set to 0: this measures load, not answers). The run is made twice: as
`build_application` assembles the bot (PTB's AIORateLimiter keeps the answers to Telegram's
flood limit of 30 messages a second; "typing..." goes around it), and with that limit lifted,
which shows the cost of the search itself.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prometheus_client import generate_latest
from telegram.ext import AIORateLimiter, Application

from bot.app import build_application, register
from bot.handlers import Handlers
from bot.memory import RateLimiter
from bot.service import QAService
from embeddings.articles import read_articles
from embeddings.cores import cores
from embeddings.encoders.backends import DEFAULT_BACKEND, make_encoder
from embeddings.encoders.base import DEFAULT_MODEL, Encoder
from embeddings.index.build import build_index
from embeddings.search.decision import Thresholds
from embeddings.search.reranker import Reranker
from testbed.telegram_server import TelegramServer

ROOT = Path(__file__).resolve().parent.parent
FLOOD_LIMIT = 30.0  # messages a second, Telegram's limit across chats (one per answer)
QUESTIONS = [
    "Who held the press conference about the plenary session?",
    "What did the plenary session decide about party building?",
    "What is the main task of party building in the new era?",
    "What did the Chongqing Municipal Party Committee hold?",
    "Which department did Jiang Hui lead?",
    "What does the session say about strict governance of the party?",
    "How will the party strengthen grassroots organisations?",
    "What does the plenary session call for?",
]


@dataclass(frozen=True)
class Run:
    """One load run: every question's latency in seconds and how it was answered."""

    users: int
    latencies: list[float]
    answered: int
    other: int  # a reply that is not a quote ("not found", a refusal, an apology)
    unanswered: int  # no reply within the timeout
    seconds: float

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else float("nan")


async def _ask(server: TelegramServer, chat_id: int, text: str, wait: float) -> tuple[float, str]:
    """One question: its latency and "answered", "other" or "unanswered"."""
    before = len(server.messages(chat_id))
    started = time.perf_counter()
    server.user_message(chat_id, text)
    try:
        await server.wait_for(lambda: len(server.messages(chat_id)) > before, wait)
    except TimeoutError:
        return time.perf_counter() - started, "unanswered"
    latency = time.perf_counter() - started
    reply = server.messages(chat_id)[before].text
    return latency, "answered" if reply.startswith("1. ") else "other"


async def _user(
    server: TelegramServer, chat_id: int, questions: Sequence[str], wait: float
) -> list[tuple[float, str]]:
    return [await _ask(server, chat_id, question, wait) for question in questions]


async def load(server: TelegramServer, users: int, per_user: int, wait: float) -> Run:
    """`users` users asking `per_user` questions each, all at once."""
    started = time.perf_counter()
    results = await asyncio.gather(
        *(_user(server, 10_000 + user, _questions(user, per_user), wait) for user in range(users))
    )
    seconds = time.perf_counter() - started
    flat = [result for user in results for result in user]
    return Run(
        users,
        [latency for latency, outcome in flat if outcome != "unanswered"],
        sum(outcome == "answered" for _, outcome in flat),
        sum(outcome == "other" for _, outcome in flat),
        sum(outcome == "unanswered" for _, outcome in flat),
        seconds,
    )


def _questions(user: int, count: int) -> list[str]:
    return [QUESTIONS[(user + n) % len(QUESTIONS)] for n in range(count)]


def _application(server: TelegramServer, handlers: Handlers, flood_limit: bool) -> Application:  # type: ignore[type-arg]
    """The bot as `build_application` makes it, or the same without the flood limit."""
    if flood_limit:
        return build_application(server.token, handlers, base_url=server.base_url)
    application = (
        Application.builder()
        .token(server.token)
        .base_url(server.base_url)
        .rate_limiter(AIORateLimiter(overall_max_rate=0, group_max_rate=0, max_retries=3))
        .concurrent_updates(True)
        .build()
    )
    register(application, handlers)
    return application


@dataclass(frozen=True)
class Setting:
    """How the bot is run for one row of the table."""

    name: str
    flood_limit: bool  # PTB's AIORateLimiter at Telegram's 30 calls a second, as built


SETTINGS = [
    Setting("as built", flood_limit=True),
    Setting("flood limit lifted", flood_limit=False),
]


@dataclass(frozen=True)
class Result:
    """One setting's runs, and the cost of one question asked alone."""

    setting: Setting
    single: Run
    loaded: Run
    search_ms: float  # wall time: encode the question, rank and rerank, pick the bold sentences
    cpu_ms: float  # the CPU time of the same, over every thread (the reranker uses both cores)


async def measure(
    index_dir: Path, encoder: Encoder, options: argparse.Namespace, setting: Setting
) -> Result:
    """The single-user run, the load run and the cost of a question, on a fresh bot."""
    reranker = None if options.fake or options.no_rerank else Reranker()
    every_question = Thresholds(calibrated=0.0, cosine=0.0)
    service = QAService(index_dir, encoder, reranker=reranker, thresholds=every_question)
    handlers = Handlers(service, limiter=RateLimiter(limit=0))
    async with TelegramServer() as server:
        application = _application(server, handlers, setting.flood_limit)
        await application.initialize()
        await application.start()
        assert application.updater is not None
        await application.updater.start_polling(poll_interval=0.0, timeout=10)
        try:
            await _ask(server, 1, QUESTIONS[0], 120)  # warm-up: loads the model
            single = await load(server, 1, options.baseline, 60)
            loaded = await load(server, options.users, options.questions, 300)
            if options.metrics_out and setting.flood_limit:
                handlers.metrics.watch_index(service)
                options.metrics_out.write_bytes(generate_latest(handlers.metrics.registry))
        finally:
            await application.updater.stop()
            await application.stop()
            await application.shutdown()
    wall, cpu = [], []
    for question in QUESTIONS:
        started, started_cpu = time.perf_counter(), time.process_time()
        await service.answers(await service.rank(question), 0, 3)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    median = statistics.median
    return Result(setting, single, loaded, median(wall) * 1000, median(cpu) * 1000)


def table(results: list[Result]) -> str:
    """The runs as a Markdown table."""
    lines = [
        "| bot | users | questions | answered | errors | p50 ms | p95 ms | p99 ms "
        "| single-user p50 ms | single-user p95 ms | questions/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        run, single = result.loaded, result.single
        questions = run.answered + run.other + run.unanswered
        lines.append(
            f"| {result.setting.name} | {run.users} | {questions} | {run.answered} | "
            f"{run.other + run.unanswered} | {run.percentile(50):.0f} | {run.percentile(95):.0f} | "
            f"{run.percentile(99):.0f} | {single.percentile(50):.0f} | "
            f"{single.percentile(95):.0f} | {questions / run.seconds:.1f} |"
        )
    return "\n".join(lines)


def explanation(results: list[Result], users: int) -> str:
    """Where the time goes: one question's cost alone, the throughput it allows, and the
    latency that throughput means for `users` users waiting on each other (Little's law)."""
    workers = cores()  # the bot runs one search per core it may use
    lines = []
    for result in results:
        capacity = workers * 1000 / result.cpu_ms
        limited = result.setting.flood_limit and capacity > FLOOD_LIMIT
        capacity = min(capacity, FLOOD_LIMIT) if result.setting.flood_limit else capacity
        lines.append(
            f"* {result.setting.name}: one question alone takes {result.search_ms:.0f} ms "
            f"(question, ranking, reranker and bold sentences) and {result.cpu_ms:.0f} ms of CPU, "
            f"so {workers} cores answer at most {capacity:.1f} questions/s"
            + (f" (the flood limit: {FLOOD_LIMIT:.0f} answers/s)" if limited else "")
            + f"; {users} users each waiting for an answer wait about {users} / {capacity:.1f} = "
            f"{users / capacity:.1f} s, measured p50 {result.loaded.percentile(50) / 1000:.1f} s."
        )
    return "\n".join(lines)


def _encoder(fake: bool, index_dir: Path) -> Encoder:
    """The fake encoder, or the product's default model and backend (exported once)."""
    if fake:
        from testbed.fake_encoder import FakeEncoder

        return FakeEncoder()
    return make_encoder(DEFAULT_MODEL, DEFAULT_BACKEND, index_dir, export=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--questions", type=int, default=4, help="questions per user")
    parser.add_argument("--baseline", type=int, default=20, help="single-user questions")
    parser.add_argument("--fake", action="store_true", help="the fake encoder instead of the model")
    parser.add_argument("--no-rerank", action="store_true", help="the bot without its reranker")
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument(
        "--metrics-out", type=Path, help="write the bot's /metrics after the run as built here"
    )
    options = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.ERROR)
    results = []
    with tempfile.TemporaryDirectory(prefix="newsqa-stress-") as folder:
        shutil.copytree(options.data, Path(folder) / "data")
        articles = read_articles(Path(folder) / "data").articles
        encoder = _encoder(options.fake, Path(folder) / "index")
        build_index(articles, encoder, Path(folder) / "index")
        for setting in SETTINGS:
            results.append(asyncio.run(measure(Path(folder) / "index", encoder, options, setting)))
    load_average = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"{encoder.name} over {len(articles)} article(s) in {options.data}, {os.cpu_count()} CPU "
        f"cores, load average {load_average}\n"
    )
    print(table(results))
    print()
    if options.fake:
        print(
            "With the fake encoder a search costs about nothing: these latencies are the floor of"
        )
        print("the harness itself (PTB, HTTP and the Bot API server share one event loop).")
    else:
        print(explanation(results, options.users))
    return 0 if all(r.loaded.other + r.loaded.unanswered == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
