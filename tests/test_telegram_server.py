"""The test Bot API server behaves like Telegram towards the real PTB client."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    MessageEntity,
    Update,
    User,
)
from telegram.error import (
    BadRequest,
    Conflict,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)
from telegram.ext import Application, ContextTypes, MessageHandler, filters

from testbed.telegram_server import SECRET_HEADER, TelegramServer, parse_html

CHAT = 4242


@pytest.fixture
async def server() -> AsyncIterator[TelegramServer]:
    """A running server, stopped after the test."""
    async with TelegramServer() as running:
        yield running


@pytest.fixture
async def bot(server: TelegramServer) -> AsyncIterator[Bot]:
    """A real PTB Bot pointed at the server."""
    async with Bot(
        server.token, base_url=server.base_url, base_file_url=server.base_file_url
    ) as client:
        yield client


async def test_get_me_parses_into_a_user(bot: Bot, server: TelegramServer) -> None:
    """getMe answers a bot User; PTB caches it on initialize."""
    me = await bot.get_me()
    assert isinstance(me, User)
    assert me.is_bot
    assert me.username == "newsqa_test_bot"
    assert me.id == server.bot_user["id"]
    assert bot.username == "newsqa_test_bot"


async def test_wrong_token_is_unauthorized(server: TelegramServer) -> None:
    """A token the server does not know gets Telegram's 401."""
    other = Bot("1:wrong", base_url=server.base_url)
    with pytest.raises(InvalidToken):
        await other.initialize()


async def test_method_names_are_case_insensitive(bot: Bot, server: TelegramServer) -> None:
    """GETME works like getMe and is recorded under the canonical name."""
    result = await bot.do_api_request("GETME")
    assert result["username"] == "newsqa_test_bot"
    assert server.calls[-1][0] == "getMe"


async def test_long_poll_returns_an_update_as_soon_as_it_arrives(
    bot: Bot, server: TelegramServer
) -> None:
    """A waiting getUpdates answers when a user writes, not at its timeout."""
    started = time.monotonic()
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await server.wait_for(lambda: bool(server.calls_to("getUpdates")))  # the poll is waiting
    server.user_message(CHAT, "hello")
    updates = await asyncio.wait_for(poll, 2)
    assert time.monotonic() - started < 2
    assert len(updates) == 1
    assert isinstance(updates[0], Update)
    assert updates[0].message is not None
    assert updates[0].message.text == "hello"
    assert updates[0].message.chat.type == "private"


async def test_long_poll_waits_for_its_timeout_when_empty(bot: Bot) -> None:
    """With nothing queued, getUpdates holds the request for `timeout` seconds."""
    started = time.monotonic()
    updates = await bot.get_updates(timeout=1)
    elapsed = time.monotonic() - started
    assert updates == ()
    assert 0.9 <= elapsed < 2.5


async def test_offset_confirms_and_limit_caps(bot: Bot, server: TelegramServer) -> None:
    """Updates stay until an offset past them confirms them; limit caps a batch."""
    first = server.user_message(CHAT, "one")
    server.user_message(CHAT, "two")
    assert [u.update_id for u in await bot.get_updates(limit=1)] == [first["update_id"]]
    batch = await bot.get_updates()
    assert len(batch) == 2  # nothing was confirmed yet
    assert await bot.get_updates(offset=batch[-1].update_id + 1) == ()
    assert server.pending_updates == []


async def test_command_and_mention_entities_are_computed(server: TelegramServer) -> None:
    """/commands and @mentions get entities as Telegram adds them."""
    update = server.user_message(-100, "/ask@newsqa_test_bot hi", chat_type="supergroup")
    assert update["message"]["entities"] == [{"type": "bot_command", "offset": 0, "length": 20}]
    text = f"hey {server.bot_mention} what?"
    update = server.user_message(-100, text, chat_type="supergroup")
    assert update["message"]["entities"] == [{"type": "mention", "offset": 4, "length": 16}]
    assert update["message"]["from"]["id"] != -100


async def test_valid_html_is_sent_and_stored_as_plain_text(
    bot: Bot, server: TelegramServer
) -> None:
    """Bold, links, entities and an expandable quote parse into text plus entities."""
    html = (
        '<b>Title</b> &amp; <a href="https://example.com/a?x=1&amp;y=2">link</a>\n'
        "<blockquote expandable>Quote &lt;tag&gt; &quot;q&quot; &#128512;</blockquote>"
    )
    message = await bot.send_message(CHAT, html, parse_mode="HTML")
    plain = 'Title & link\nQuote <tag> "q" \U0001f600'
    assert message.text == plain
    assert message.from_user is not None
    assert message.from_user.is_bot
    assert message.chat.id == CHAT
    assert {e.type for e in message.entities} == {
        MessageEntity.BOLD,
        MessageEntity.TEXT_LINK,
        MessageEntity.EXPANDABLE_BLOCKQUOTE,
    }
    [stored] = server.messages(CHAT)
    assert stored.raw_text == html
    assert stored.text == plain
    assert stored.parse_mode == "HTML"
    assert stored.entities_of("bold") == ["Title"]
    assert stored.entities_of("expandable_blockquote") == ['Quote <tag> "q" \U0001f600']
    link = next(e for e in stored.entities if e["type"] == "text_link")
    assert link == {
        "type": "text_link",
        "offset": 8,
        "length": 4,
        "url": "https://example.com/a?x=1&y=2",
    }
    quote = stored.entities[-1]
    assert (quote["offset"], quote["length"]) == (13, 18)  # the emoji is 2 UTF-16 units


@pytest.mark.parametrize(
    ("html", "reason"),
    [
        ("<b>never closed", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b>crossed</i>", 'Unmatched end tag at byte offset 10, expected "</b>", found "</i>"'),
        ("<p>para</p>", 'Unsupported start tag "p" at byte offset 0'),
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
        ("Fish & chips", 'Unescaped "&" at byte offset 5'),
        ('<span class="x">s</span>', 'Tag "span" must have class "tg-spoiler"'),
        ("<a href=http://x.y>z</a>", "Unexpected end of name token at byte offset 8"),
    ],
)
async def test_malformed_html_is_a_bad_request(
    bot: Bot, server: TelegramServer, html: str, reason: str
) -> None:
    """Telegram's reasons come back as BadRequest, and nothing is stored."""
    with pytest.raises(BadRequest, match=r"(?i)can't parse entities") as caught:
        await bot.send_message(CHAT, html, parse_mode="HTML")
    # PTB drops "Bad Request: " and applies str.capitalize(), lower-casing the rest.
    assert reason.lower() in caught.value.message.lower()
    assert server.messages(CHAT) == []


async def test_non_strict_server_keeps_a_bare_ampersand() -> None:
    """strict=False follows tdlib exactly: a lone & is literal text."""
    async with (
        TelegramServer(strict=False) as lenient,
        Bot(lenient.token, base_url=lenient.base_url) as client,
    ):
        message = await client.send_message(CHAT, "AT&T <b>ok</b>", parse_mode="HTML")
    assert message.text == "AT&T ok"


async def test_text_over_the_limit_after_parsing_is_too_long(bot: Bot) -> None:
    """4097 characters, or 4098 UTF-16 units of emoji, are too long."""
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(CHAT, "a" * 4097)
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(CHAT, "\U0001f600" * 2049, parse_mode="HTML")


async def test_limit_counts_parsed_text_not_markup(bot: Bot, server: TelegramServer) -> None:
    """4096 characters wrapped in tags (raw text far longer) are accepted."""
    html = "<b>ab</b><i>cd</i>&amp;&lt;" * 682 + "wxyz"
    assert len(html) > 4 * 4096
    message = await bot.send_message(CHAT, html, parse_mode="HTML")
    assert message.text is not None
    assert len(message.text) == 4096
    assert len(server.messages(CHAT)[0].entities) == 2 * 682


async def test_empty_after_parsing_and_trimming_is_rejected(bot: Bot) -> None:
    """Only tags and whitespace leave an empty text."""
    with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
        await bot.send_message(CHAT, "<b> </b>\n ", parse_mode="HTML")


async def test_callback_data_over_64_bytes_is_rejected(bot: Bot) -> None:
    """Inline buttons keep Telegram's 1-64 byte callback_data rule."""
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="é" * 33)]])
    with pytest.raises(BadRequest, match=r"(?i)BUTTON_DATA_INVALID"):
        await bot.send_message(CHAT, "pick", reply_markup=markup)


async def test_edit_rules(bot: Bot, server: TelegramServer) -> None:
    """Unchanged edits are refused, real ones stored; unknown messages are not found."""
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("More", callback_data="more:1")]])
    sent = await bot.send_message(CHAT, "<b>v1</b>", parse_mode="HTML", reply_markup=markup)
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text(
            "<b>v1</b>", CHAT, sent.message_id, parse_mode="HTML", reply_markup=markup
        )
    edited = await bot.edit_message_text("<b>v1</b>", CHAT, sent.message_id, parse_mode="HTML")
    assert isinstance(edited, type(sent))
    assert edited.reply_markup is None  # an edit without reply_markup drops the keyboard
    [stored] = server.messages(CHAT)
    assert stored.edit_date is not None
    assert stored.history == ["v1"]
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("x", CHAT, 999)


async def test_button_press_and_answer(bot: Bot, server: TelegramServer) -> None:
    """press_button delivers a callback_query for the stored message; it can be answered once."""
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("More", callback_data="more:1")]])
    sent = await bot.send_message(CHAT, "pick", reply_markup=markup)
    server.press_button(CHAT, sent.message_id, "more:1")
    [update] = await bot.get_updates()
    assert update.callback_query is not None
    assert update.callback_query.data == "more:1"
    assert update.callback_query.message is not None
    assert update.callback_query.message.message_id == sent.message_id
    assert await update.callback_query.answer("ok")
    assert server.callback_answers[0]["text"] == "ok"
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await bot.answer_callback_query(update.callback_query.id)


async def test_unknown_method_is_a_bad_request(bot: Bot) -> None:
    """Methods the server does not implement answer 400."""
    with pytest.raises(BadRequest, match=r"(?i)method not found"):
        await bot.do_api_request("sendHologram", api_kwargs={"chat_id": CHAT})


# RetryAfter's own message reads .retry_after, which warns in PTB 22 (int -> timedelta).
@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_injected_429_raises_retry_after(bot: Bot, server: TelegramServer) -> None:
    """fail_next(429) gives RetryAfter with Telegram's parameters, and stores nothing."""
    server.fail_next("sendMessage", status=429, retry_after=3)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(CHAT, "hi")
    assert "Retry in 3" in caught.value.message
    assert server.messages(CHAT) == []
    await bot.send_message(CHAT, "hi")
    assert len(server.messages(CHAT)) == 1
    assert [name for name, _ in server.calls].count("sendMessage") == 2


async def test_dropped_and_delayed_calls(bot: Bot, server: TelegramServer) -> None:
    """drop_next closes the connection; delay_next outlasts a short read timeout."""
    server.drop_next("sendMessage")
    with pytest.raises(NetworkError):
        await bot.send_message(CHAT, "lost")
    server.delay_next("sendChatAction", 2, process=False)
    with pytest.raises(TimedOut):
        await bot.send_chat_action(CHAT, "typing", read_timeout=0.2)
    assert server.messages(CHAT) == []
    assert server.chat_actions == []


async def test_webhook_mode(bot: Bot, server: TelegramServer) -> None:
    """setWebhook blocks getUpdates (409) and post_to_webhook delivers with the secret."""
    received: list[tuple[str | None, dict[str, object]]] = []

    async def receive(request: web.Request) -> web.Response:
        received.append((request.headers.get(SECRET_HEADER), await request.json()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        await bot.set_webhook(f"http://127.0.0.1:{port}/hook", secret_token="s3cret")
        assert (await bot.get_webhook_info()).url.endswith("/hook")
        with pytest.raises(Conflict):
            await bot.get_updates()
        update = server.user_message(CHAT, "via webhook")
        assert await server.post_to_webhook(update, server.webhook_secret) == 200
        assert received == [("s3cret", update)]
        assert server.pending_updates == []
    finally:
        await runner.cleanup()


async def test_application_polls_and_echoes(server: TelegramServer) -> None:
    """A real Application's polling loop receives a message and its handler's reply arrives."""

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        await update.message.reply_text(f"echo: {update.message.text}")

    app = (
        Application.builder()
        .token(server.token)
        .base_url(server.base_url)
        .base_file_url(server.base_file_url)
        .build()
    )
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0, timeout=dt.timedelta(seconds=1))
        server.user_message(CHAT, "ping")
        [reply] = await server.wait_for_messages(CHAT, 1, timeout=5)
        await app.updater.stop()
        await app.stop()
    assert reply.text == "echo: ping"
    assert reply.reply_to_message_id is None  # private chats are not quoted by default
    assert server.pending_updates == []  # the last poll confirmed the update
    assert [name for name, _ in server.calls][:2] == ["getMe", "deleteWebhook"]


def test_parse_html_matches_tdlib_for_pre_code() -> None:
    """<pre><code class="language-x"> becomes one pre entity with a language."""
    plain, entities = parse_html('<pre><code class="language-python">x = 1</code></pre>')
    assert plain == "x = 1"
    assert entities == [{"type": "pre", "offset": 0, "length": 5, "language": "python"}]
