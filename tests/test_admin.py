"""Admins adding articles from the chat, end to end: the real PTB Application against a local
Bot API server, pages from a local news site, and the fake encoder for fast builds."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot import handlers
from bot.admin import Admin
from bot.fetching import Fetcher, FetchPolicy
from bot.messages import say
from bot.pages import PageAdder
from embeddings.articles import read_articles
from embeddings.collection import ADDED_FILE, Collection
from embeddings.index.build import build_index
from testbed.fake_encoder import FakeEncoder
from testbed.telegram_server import TelegramServer
from tests.bots import Bot, Clock, start_bot, stop_bot
from tests.news_site import ARTICLES, NewsSite, Route, article_page

ALICE, BOB = 1001, 1002  # Alice is the admin
HARBOUR, FROST = ARTICLES[0], ARTICLES[1]


@pytest.fixture
async def bot(data_dir: Path, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Bot]:
    """A polling bot over the seed article whose admin is Alice; it may fetch from 127.0.0.1
    unless the test asks for {"private": False}."""
    private = getattr(request, "param", {}).get("private", True)
    encoder, index_dir = FakeEncoder(), tmp_path / "index"
    fetcher = Fetcher(FetchPolicy(allow_private=private, timeout=2.0))
    admin = Admin(
        frozenset({ALICE}),
        PageAdder(Collection(data_dir), fetcher),
        lambda: build_index(read_articles(data_dir).articles, encoder, index_dir),
    )
    async with TelegramServer() as server:
        handlers, application = await start_bot(server, data_dir, index_dir, encoder, admin=admin)
        yield Bot(server, handlers, application, data_dir, index_dir, Clock())
        await stop_bot(application)
    await fetcher.aclose()


async def _send_file(bot: Bot, user: int, name: str, content: bytes) -> str:
    """A user sends a file; the bot's next message to them."""
    before = len(bot.server.messages(user))
    bot.server.user_document(user, name, content)
    return (await bot.server.wait_for_messages(user, before + 1, timeout=10))[before].text


def _stored(data_dir: Path) -> list[str]:
    return [a.title for a in read_articles(data_dir).articles if a.source == ADDED_FILE]


async def test_an_added_page_is_announced_once_searchable_and_then_quoted(
    bot: Bot, site: NewsSite
) -> None:
    """/add fetches the page, stores it, and the reply (title and passages) comes after the
    build, so the very next question finds the article."""
    reply = await bot.ask(ALICE, f"/add {site.page(HARBOUR)}")
    assert reply.text.startswith(f"Added \u201c{HARBOUR.title}\u201d (")
    assert int(reply.text.split("(passages: ")[1].split(")")[0]) >= 1
    assert _stored(bot.data_dir) == [HARBOUR.title]
    answer = await bot.ask(ALICE, "How much is the toll to cross the harbour bridge?")
    assert answer.text.startswith(f"1. {HARBOUR.title}")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("frost.txt", ("\n\n".join([FROST.title, *FROST.paragraphs])).encode()),
        ("frost.md", ("\n\n".join([f"# {FROST.title}", *FROST.paragraphs])).encode()),
        ("frost.html", article_page(FROST, "https://example.com/frost").encode()),
        ("frost.jsonl", f'{{"title": "{FROST.title}", "text": "{FROST.paragraphs[0]}"}}'.encode()),
    ],
)
async def test_an_admins_file_is_added_and_answers_questions(
    bot: Bot, name: str, content: bytes
) -> None:
    """A .txt, .md, .html or .jsonl file is read like the articles folder's files and stored."""
    reply = await _send_file(bot, ALICE, name, content)
    assert reply.startswith(f"Added \u201c{FROST.title}\u201d (")
    assert _stored(bot.data_dir) == [FROST.title]
    answer = await bot.ask(ALICE, "Did frost destroy the apple blossom in the valley?")
    assert answer.text.startswith(f"1. {FROST.title}")


async def test_two_files_at_once_are_built_one_after_the_other(bot: Bot) -> None:
    """Builds never overlap; each file's reply comes once its own article is searchable."""
    assert bot.handlers.admin is not None
    build, running, overlapped = bot.handlers.admin.rebuild, [], []

    def rebuild() -> None:
        overlapped.append(bool(running))
        running.append(1)
        time.sleep(0.2)  # the injected fault: a build slow enough for the second file to arrive
        build()
        running.pop()

    bot.handlers.admin.rebuild = rebuild
    for article in (HARBOUR, FROST):
        text = "\n\n".join([article.title, *article.paragraphs])
        bot.server.user_document(ALICE, f"{article.slug}.txt", text.encode())
    replies = await bot.server.wait_for_messages(ALICE, 2, timeout=10)
    assert sorted(r.text.split("\u201d")[0] for r in replies) == [
        f"Added \u201c{HARBOUR.title}",
        f"Added \u201c{FROST.title}",
    ]
    assert overlapped == [False, False]


async def test_one_file_sent_twice_at_once_is_stored_once(bot: Bot) -> None:
    """Additions are taken one at a time, so the second copy is the duplicate it is."""
    text = "\n\n".join([FROST.title, *FROST.paragraphs]).encode()
    bot.server.user_document(ALICE, "frost.txt", text)
    bot.server.user_document(ALICE, "frost-copy.txt", text)
    replies = sorted(r.text for r in await bot.server.wait_for_messages(ALICE, 2, timeout=10))
    assert replies[0].startswith("Added ") and replies[1].startswith("Not added: Duplicate: ")
    assert _stored(bot.data_dir) == [FROST.title]


async def test_someone_else_is_refused_and_nothing_is_fetched_or_downloaded(
    bot: Bot, site: NewsSite
) -> None:
    """A non-admin's /add and file get the polite refusal; the site and the file are untouched."""
    assert (await bot.ask(BOB, f"/add {site.page(HARBOUR)}")).text == say("admins_only")
    assert await _send_file(bot, BOB, "frost.txt", b"Frost\n\nThe frost came.") == say(
        "admins_only"
    )
    assert site.requests == []
    assert bot.server.calls_to("getFile") == [] and bot.server.downloads == []
    assert not (bot.data_dir / ADDED_FILE).exists()


async def test_a_russian_speaker_is_refused_in_russian(bot: Bot) -> None:
    """The refusal follows the user's language, like the bot's other sentences."""
    boris = {"id": BOB, "is_bot": False, "first_name": "Boris", "language_code": "ru"}
    bot.server.raw_update(
        {
            "message": {
                "message_id": 1,
                "from": boris,
                "chat": {"id": BOB, "type": "private", "first_name": "Boris"},
                "date": int(time.time()),
                "text": "/add https://example.com/",
                "entities": [{"type": "bot_command", "offset": 0, "length": 4}],
            }
        }
    )
    [reply] = await bot.server.wait_for_messages(BOB, 1, timeout=10)
    assert reply.text == say("admins_only", "ru") != say("admins_only")


@pytest.mark.parametrize("bot", [{"private": False}], indirect=True)
async def test_an_unsafe_address_is_refused_without_a_request(bot: Bot, site: NewsSite) -> None:
    """Without --allow-private-fetch a loopback address is not fetched; the reply says why."""
    reply = await bot.ask(ALICE, f"/add {site.page(HARBOUR)}")
    assert reply.text.startswith("Not added: ") and "not public" in reply.text
    assert site.requests == []


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("/add file:///etc/passwd", "is not an http(s) address"),
        ("/add", say("add_usage")),
    ],
)
async def test_a_bad_address_gets_one_sentence(bot: Bot, command: str, expected: str) -> None:
    """A scheme other than http(s), or no address at all, is answered in one sentence."""
    assert expected in (await bot.ask(ALICE, command)).text


async def test_a_duplicate_is_reported_and_not_stored_twice(bot: Bot, site: NewsSite) -> None:
    """The same address again, or the same text as a file, is named as already there."""
    url = site.page(HARBOUR)
    await bot.ask(ALICE, f"/add {url}")
    again = await bot.ask(ALICE, f"/add {url}")
    assert again.text == say("not_added", reason=f"Already present: {url}")
    copy = await _send_file(bot, ALICE, "copy.html", article_page(HARBOUR, url).encode())
    assert copy.startswith("Not added: Duplicate: ")
    assert _stored(bot.data_dir) == [HARBOUR.title]


async def test_a_page_without_an_article_or_an_unknown_file_is_explained(
    bot: Bot, site: NewsSite
) -> None:
    """A page with no article text, a missing page and a .pdf each get one sentence naming why."""
    site.routes["/menu"] = Route(b"<html><body><p>Home</p></body></html>")
    assert "holds no article text" in (await bot.ask(ALICE, f"/add {site.url('/menu')}")).text
    assert "HTTP 404" in (await bot.ask(ALICE, f"/add {site.url('/gone')}")).text
    assert await _send_file(bot, ALICE, "paper.pdf", b"%PDF-1.4") == say("add_usage")
    assert bot.server.downloads == []
    assert not (bot.data_dir / ADDED_FILE).exists()


async def test_a_file_too_large_to_download_is_refused_without_downloading(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file over the Bot API's download limit is named as too large, not fetched."""
    monkeypatch.setattr(handlers, "MAX_DOCUMENT_BYTES", 2**20)
    reply = await _send_file(bot, ALICE, "big.txt", b"Big\n\n" + b"word " * 2**18)
    assert reply == say("not_added", reason="big.txt is larger than 1 MB")
    assert bot.server.downloads == []
