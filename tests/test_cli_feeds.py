"""`newsqa add`, `newsqa feeds` and `newsqa watch` through real click parsing, and a watched
article answered by `newsqa ask` and by the bot's service without a restart."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot import cli
from bot.app import build_application
from bot.cli import main
from bot.feeds import FEEDS_FILE, Feed, Watcher, save_feeds
from bot.fetching import Fetcher, FetchPolicy
from bot.handlers import Handlers
from bot.pages import PageAdder
from bot.service import QAService
from embeddings.articles import read_articles
from embeddings.collection import ADDED_FILE, Collection
from embeddings.encoders.base import DEFAULT_MODEL
from embeddings.index.build import build_index
from embeddings.search.decision import Thresholds
from testbed.fake_encoder import FakeEncoder
from testbed.telegram_server import TelegramServer
from tests.news_site import ARTICLES, NewsSite, article_page

QUESTION = "How much did the harbour bridge repairs cost?"
ALICE = 1001


@pytest.fixture(autouse=True)
def fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Indexes and questions use the fake encoder under the default model's name."""
    monkeypatch.setenv("NEWSQA_BACKEND", "torch")
    monkeypatch.setattr(cli, "make_encoder", lambda *args, **kwargs: FakeEncoder(DEFAULT_MODEL))


@pytest.fixture
def folders(data_dir: Path, tmp_path: Path) -> list[str]:
    """The --data and --index options of a folder holding the seed article."""
    return ["--data", str(data_dir), "--index", str(tmp_path / "index")]


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def _ask(folders: list[str], question: str = QUESTION) -> dict:  # type: ignore[type-arg]
    code, output = _invoke("ask", "--json", "--no-rerank", "--min-score", "0", *folders, question)
    assert code == 0, output
    return json.loads(output)  # type: ignore[no-any-return]


def test_add_stores_the_page_and_ask_answers_from_it(
    site: NewsSite, folders: list[str], data_dir: Path
) -> None:
    """`newsqa add URL` stores one line, says where the date came from, updates the index,
    and the next `ask` quotes the page."""
    url = site.url("/articles/harbour-bridge.html")
    code, output = _invoke("add", "--allow-private-fetch", *folders, url)
    assert code == 0, output
    assert f'Added "{ARTICLES[0].title}" ({url}), dated 2024-05-14 from the page' in output
    assert "Indexed 2 articles" in output
    assert "184 million euros" in _ask(folders)["hits"][0]["text"]
    code, output = _invoke("add", "--allow-private-fetch", *folders, url)
    assert code == 0 and f"Already present: {url}" in output
    assert len((data_dir / ADDED_FILE).read_text().splitlines()) == 1


def test_add_a_saved_html_file_dates_it_at_the_fetch(
    tmp_path: Path, folders: list[str], data_dir: Path
) -> None:
    """A saved page without a date is added, dated when it was added, and says so."""
    page = tmp_path / "saved.html"
    undated = ARTICLES[1].__class__("x", ARTICLES[1].title, "", ARTICLES[1].paragraphs)
    page.write_text(article_page(undated, "https://example.org/x"))
    code, output = _invoke("add", *folders, str(page))
    assert code == 0, output
    assert "from fetch time (the page gives no date)" in output
    assert [a.title for a in read_articles(data_dir).articles][-1] == ARTICLES[1].title


def test_add_refuses_a_private_address_and_names_the_flag(
    site: NewsSite, folders: list[str]
) -> None:
    """Without --allow-private-fetch a local address is refused, naming the option; the other
    sources are still added and the exit code says one failed."""
    refused = site.url("/articles/harbour-bridge.html")
    code, output = _invoke("add", *folders, refused, "ftp://example.org/x")
    assert code == 1
    assert "which is not public; fetch only public http(s) addresses, or pass " in output
    assert "--allow-private-fetch" in output and "2 of 2 could not be added" in output
    assert site.requests == []


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("no-such-page.html", "no-such-page.html is neither an http(s) address nor a file; give"),
        ("ftp://example.org/a", "is not an http(s) address; fetch only public http(s) addresses"),
        ("http://169.254.169.254/latest", "169.254.169.254, which is not public; fetch only"),
    ],
)
def test_add_names_each_bad_source_and_the_fix(
    folders: list[str], source: str, message: str
) -> None:
    """A source that cannot be added is one line naming it and the fix; exit code 1."""
    code, output = _invoke("add", *folders, source)
    assert code == 1 and message in output and "Traceback" not in output


def test_feeds_add_list_remove(data_dir: Path) -> None:
    """Feeds are listed in data/feeds.json: added once, listed, removed; bad input is named."""
    feed = "https://news.example/rss.xml"
    assert _invoke("feeds", "add", "--data", str(data_dir), feed)[0] == 0
    code, output = _invoke("feeds", "add", "--data", str(data_dir), feed)
    assert code == 0 and "Already watching" in output
    assert _invoke("feeds", "list", "--data", str(data_dir)) == (0, feed + "\n")
    code, output = _invoke("feeds", "add", "--data", str(data_dir), "news.example/rss")
    assert code == 2 and "is not an http(s) address" in output
    assert _invoke("feeds", "remove", "--data", str(data_dir), feed)[0] == 0
    code, output = _invoke("feeds", "remove", "--data", str(data_dir), feed)
    assert code == 1 and "is not watched; see: newsqa feeds list" in output
    assert _invoke("feeds", "list", "--data", str(data_dir)) == (0, "")


def test_a_damaged_feed_list_is_named_with_the_fix(data_dir: Path) -> None:
    """A feeds.json that is not the list is one error naming the file and what to do."""
    (data_dir / FEEDS_FILE).write_text("{not json")
    code, output = _invoke("feeds", "list", "--data", str(data_dir))
    assert code == 1 and f"{data_dir / FEEDS_FILE} is damaged" in output
    assert "then add the feeds again with: newsqa feeds add" in output


def test_watch_once_delivers_a_new_article_that_ask_answers(
    site: NewsSite, folders: list[str], data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`newsqa watch --once` polls the feed, logs, stores and indexes its articles; `ask`
    answers from them."""
    site.publish(ARTICLES[0], ARTICLES[2])
    assert _invoke("feeds", "add", "--data", str(data_dir), site.url("/atom.xml"))[0] == 0
    code, output = _invoke("watch", "--once", "--allow-private-fetch", *folders)
    assert code == 0, output
    assert "Indexed 3 articles" in output
    added = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Added")]
    assert len(added) == 2
    assert "184 million euros" in _ask(folders)["hits"][0]["text"]


async def test_the_bot_service_answers_from_a_watched_article_without_restarting(
    site: NewsSite, data_dir: Path, tmp_path: Path
) -> None:
    """The running service answers from the index the watcher rebuilt, at its next question."""
    encoder, index = FakeEncoder(DEFAULT_MODEL), tmp_path / "index"
    build_index(read_articles(data_dir).articles, encoder, index)
    service = QAService(index, encoder, thresholds=Thresholds(None, 0.0, 0.0))
    before = await service.rank(QUESTION)
    assert all("184 million" not in hit.passage.text for hit in before.hits)

    built = threading.Event()

    def rebuild() -> None:
        build_index(read_articles(data_dir).articles, encoder, index)
        built.set()

    site.publish(ARTICLES[0])
    save_feeds(data_dir / FEEDS_FILE, [Feed(site.url("/rss.xml"))])
    fetcher = Fetcher(FetchPolicy(allow_private=True))
    watcher = Watcher(data_dir / FEEDS_FILE, PageAdder(Collection(data_dir), fetcher), rebuild)
    task = asyncio.create_task(watcher.run())
    try:
        assert await asyncio.to_thread(built.wait, 10), "the watcher never rebuilt the index"
        assert (data_dir / ADDED_FILE).exists()
        after = await service.rank(QUESTION)
    finally:
        task.cancel()
        await fetcher.aclose()
    assert "184 million euros" in after.hits[0].passage.text


async def test_the_bot_with_a_watcher_beside_it_answers_a_new_article(
    site: NewsSite, data_dir: Path, tmp_path: Path
) -> None:
    """The real application runs the watcher as its background task (as `run --watch` does):
    an article published on the site is answered in Telegram, and stopping ends the watcher."""
    encoder, index = FakeEncoder(), tmp_path / "index"
    build_index(read_articles(data_dir).articles, encoder, index)
    save_feeds(data_dir / FEEDS_FILE, [Feed(site.url("/rss.xml"))])
    site.publish(ARTICLES[0])
    fetcher = Fetcher(FetchPolicy(allow_private=True))
    adder = PageAdder(Collection(data_dir), fetcher)
    built = threading.Event()

    def rebuild() -> None:
        build_index(read_articles(data_dir).articles, encoder, index)
        built.set()

    watcher = Watcher(data_dir / FEEDS_FILE, adder, rebuild, interval=0.1)
    service = QAService(index, encoder, thresholds=Thresholds(None, 0.1))
    async with TelegramServer() as server:
        application = build_application(
            server.token, Handlers(service), base_url=server.base_url, background=watcher.run
        )
        await application.initialize()
        assert application.post_init is not None and application.post_stop is not None
        await application.post_init(application)
        await application.start()
        assert application.updater is not None
        await application.updater.start_polling(poll_interval=0.0, timeout=1)
        try:
            assert await asyncio.to_thread(built.wait, 10), "the watcher never rebuilt the index"
            server.user_message(ALICE, QUESTION)
            (reply,) = await server.wait_for_messages(ALICE, 1, timeout=10)
        finally:
            await application.updater.stop()
            await application.stop()
            await application.post_stop(application)
            await application.shutdown()
            await fetcher.aclose()
    assert reply.text.startswith(f"1. {ARTICLES[0].title}")
    assert "184 million euros" in reply.text
    assert not [task for task in asyncio.all_tasks() if task.get_name() == "background"]


def test_run_watch_needs_the_bot(folders: list[str]) -> None:
    """`run --watch` without a token is a usage error: the watcher runs beside the bot."""
    code, output = _invoke("run", "--watch", *folders)
    assert code == 2 and "--watch runs beside the bot: set TELEGRAM_BOT_TOKEN" in output
