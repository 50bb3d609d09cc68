"""The bot under a misbehaving Bot API, odd questions and hostile users, end to end.

The real PTB Application talks HTTP to the local Bot API server (`testbed/telegram_server.py`),
which injects the faults: 429 with `retry_after`, 500/502, a call that hangs past the client's
timeout, a dropped connection, and update types the bot has never heard of. After each fault the
question is answered exactly once (no duplicate message) and polling goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from telegram.ext import Application

from bot.app import RetryingRateLimiter
from bot.handlers import Handlers
from bot.memory import ExpiringStore, RateLimiter
from bot.messages import MESSAGES, say
from embeddings.articles import read_articles
from embeddings.index.build import build_index
from testbed.fake_encoder import FakeEncoder
from testbed.telegram_server import SentMessage, TelegramServer
from tests.bots import Clock, handled, start_bot, stop_bot, write_news
from tests.conftest import logging_into

ALICE, BOB = 1001, 1002
GROUP = -100777
QUESTION = "How far did the river rise overnight?"
ANSWER_START = "1. Heavy rain floods the valley"
# Entities our replies may carry; anything else would have come from article or question text.
OWN_ENTITIES = {"bold", "italic", "expandable_blockquote"}


def _in_any_language(key: str) -> set[str]:
    return set(MESSAGES[key].values())


@dataclass
class Bot:
    """A polling bot over the seed article and two short ones, and the server it talks to."""

    server: TelegramServer
    handlers: Handlers
    application: Application  # type: ignore[type-arg]
    clock: Clock

    async def ask(self, chat_id: int, text: str, timeout: float = 10, **kwargs: object) -> str:  # noqa: ASYNC109
        """Send a question and return the bot's one reply, checking that no second one (a
        duplicate or an apology) was sent by the time the bot is done with the question."""
        before = len(self.server.messages(chat_id))
        asked = self.server.user_message(chat_id, text, **kwargs)  # type: ignore[arg-type]
        replies = await self.server.wait_for_messages(chat_id, before + 1, timeout=timeout)
        await handled(self.application).wait(asked, timeout=timeout)
        assert len(self.server.messages(chat_id)) == before + 1, "more than one reply"
        return replies[before].text


@pytest.fixture
async def bot(data_dir: Path, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Bot]:
    """A running bot; parametrise with {"limit": n, "allowed": {...}} for limits and access."""
    write_news(data_dir)
    options = getattr(request, "param", {})
    clock = Clock()
    async with TelegramServer() as server:
        handlers, application = await start_bot(
            server, data_dir, tmp_path / "index", FakeEncoder(),
            allowed_chats=frozenset(options.get("allowed", ())),
            limiter=RateLimiter(options.get("limit", 0), 60, clock),
            pages=ExpiringStore(capacity=100, ttl=600, clock=clock),
        )  # fmt: skip
        yield Bot(server, handlers, application, clock)
        await stop_bot(application)


# -- faults on sending ------------------------------------------------------------------------


async def test_flood_limit_on_send_is_waited_out_then_answered_once(bot: Bot) -> None:
    """A 429 with retry_after=1 on the answer is waited out; the answer arrives once, later."""
    bot.server.fail_next("sendMessage", status=429, retry_after=1)
    started = time.monotonic()
    assert (await bot.ask(ALICE, QUESTION)).startswith(ANSWER_START)
    assert time.monotonic() - started >= 1.0
    assert len(bot.server.calls_to("sendMessage")) == 2  # the refused one and the retry


@pytest.mark.parametrize("status", [500, 502])
async def test_server_error_on_send_is_retried_and_answered_once(bot: Bot, status: int) -> None:
    """Two 5xx replies to the answer are retried; the user gets the answer once, no apology."""
    bot.server.fail_next("sendMessage", status=status, times=2)
    assert (await bot.ask(ALICE, QUESTION)).startswith(ANSWER_START)
    assert len(bot.server.calls_to("sendMessage")) == 3


async def test_dropped_connection_on_send_is_retried_and_answered_once(bot: Bot) -> None:
    """A connection closed without an answer is retried; the answer is delivered once."""
    bot.server.drop_next("sendMessage")
    assert (await bot.ask(ALICE, QUESTION)).startswith(ANSWER_START)
    assert len(bot.server.calls_to("sendMessage")) == 2  # the dropped one and the retry


async def test_send_that_times_out_but_is_delivered_is_not_repeated(bot: Bot) -> None:
    """Telegram takes 6 s (past PTB's 5 s read timeout) but delivers: one answer, no apology,
    no second copy; the next question is answered normally."""
    bot.server.delay_next("sendMessage", 6.0, process=True)
    assert (await bot.ask(ALICE, QUESTION, timeout=15)).startswith(ANSWER_START)
    assert (await bot.ask(ALICE, "who won the cup final")).startswith("1. Local team wins")


@pytest.mark.parametrize(
    ("status", "times"), [(400, 1), (500, 4)], ids=["bad-request", "server-error-past-retries"]
)
async def test_failing_typing_indicator_does_not_stop_the_answer(
    bot: Bot, status: int, times: int
) -> None:
    """When "typing..." cannot be shown, even after retries, the question is still answered."""
    bot.server.fail_next("sendChatAction", status=status, times=times)
    assert (await bot.ask(ALICE, QUESTION)).startswith(ANSWER_START)


async def test_typing_indicator_does_not_wait_for_the_flood_limit() -> None:
    """With the limiter's budget spent by a message, "typing..." still goes out at once."""
    limiter = RetryingRateLimiter(overall_max_rate=1, overall_time_period=60)
    await limiter.initialize()
    sent: list[str] = []

    async def call(name: str) -> bool:
        sent.append(name)
        return True

    data = {"chat_id": ALICE}
    await limiter.process_request(call, ("message",), {}, "sendMessage", data, None)
    await asyncio.wait_for(
        limiter.process_request(call, ("typing",), {}, "sendChatAction", data, None), 1.0
    )
    assert sent == ["message", "typing"]
    await limiter.shutdown()


async def test_answer_failing_past_all_retries_gets_one_apology(bot: Bot) -> None:
    """When every try fails (4 x 500), the user gets one apology, and the next question works."""
    bot.server.fail_next("sendMessage", status=500, times=4)
    assert await bot.ask(ALICE, QUESTION) in _in_any_language("failed")
    assert (await bot.ask(ALICE, QUESTION)).startswith(ANSWER_START)


# -- faults on polling --------------------------------------------------------------------------


async def _polled(bot: Bot, calls: int) -> None:
    """Wait until the bot has called getUpdates `calls` times in all."""
    await bot.server.wait_for(lambda: len(bot.server.calls_to("getUpdates")) >= calls, timeout=5)


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 429, "retry_after": 1},
        {"status": 500},
        {"status": 502, "times": 2},
        "drop",
    ],
    ids=["429", "500", "502-twice", "dropped"],
)
async def test_polling_recovers_from_a_fault_and_answers_once(
    bot: Bot, fault: dict[str, int] | str
) -> None:
    """A failed getUpdates is retried; questions asked meanwhile are answered once each."""
    polls = len(bot.server.calls_to("getUpdates"))
    if fault == "drop":
        bot.server.drop_next("getUpdates")
    else:
        assert isinstance(fault, dict)
        bot.server.fail_next("getUpdates", **fault)
    faulty = 1 if isinstance(fault, str) else fault.get("times", 1)
    await _polled(bot, polls + faulty)  # the faults have hit; the question waits for recovery
    assert (await bot.ask(ALICE, QUESTION)).startswith(ANSWER_START)
    assert (await bot.ask(BOB, "who won the cup final")).startswith("1. Local team wins")


async def test_polling_recovers_from_a_hung_get_updates(bot: Bot) -> None:
    """A getUpdates that hangs past the client's timeout is abandoned and polled again; the
    question sent meanwhile is answered once."""
    polls = len(bot.server.calls_to("getUpdates"))
    bot.server.delay_next("getUpdates", 8.0, process=False)
    await _polled(bot, polls + 1)
    assert (await bot.ask(ALICE, QUESTION, timeout=20)).startswith(ANSWER_START)
    assert (await bot.ask(BOB, "who won the cup final")).startswith("1. Local team wins")


async def test_updates_the_bot_does_not_understand_are_skipped_in_a_batch(bot: Bot) -> None:
    """One getUpdates batch holds an unknown update type, a message of an unknown kind and a
    question: the question is answered once, the odd message gets the text-only line, and
    polling goes on."""
    now = int(time.time())
    chat = {"id": ALICE, "type": "private", "first_name": "Ann"}
    user = {"id": ALICE, "is_bot": False, "first_name": "Ann"}
    # Queued without yielding to the event loop, so the waiting long poll takes all three.
    batch = [
        bot.server.raw_update({"future_update_kind": {"id": 1, "payload": {"x": [1, 2]}}}),
        bot.server.raw_update(
            {"message": {"message_id": 500, "date": now, "chat": chat, "from": user,
                         "hologram": {"file_id": "h1", "depth": 3}}}
        ),
        bot.server.user_message(ALICE, QUESTION),
    ]  # fmt: skip
    replies = await bot.server.wait_for_messages(ALICE, 2)
    await handled(bot.application).wait(*batch)
    texts = sorted(m.text for m in bot.server.messages(ALICE))
    assert len(replies) == len(texts) == 2
    assert texts[0].startswith(ANSWER_START) and texts[1] in _in_any_language("not_text")
    assert (await bot.ask(BOB, "who won the cup final")).startswith("1. Local team wins")


# -- odd questions --------------------------------------------------------------------------------


def _is_sensible(reply: SentMessage) -> bool:
    """An answer, "not found", or "ask in words": never the apology for an error."""
    if reply.text.startswith("1. "):
        return {e["type"] for e in reply.entities} <= OWN_ENTITIES and all(
            b.get("callback_data", "").startswith(("a:", "p:")) for b in reply.buttons
        )
    empty = {
        say("empty_question", lang, example="").rstrip() for lang in MESSAGES["empty_question"]
    }
    return reply.text in _in_any_language("not_found") or any(
        reply.text.startswith(prefix) for prefix in empty
    )


ODD_QUESTIONS = {
    "empty-ask": "/ask",
    "whitespace": " \t  ",
    "emoji-only": "😀🎉👩‍👩‍👧‍👦",
    "punctuation-only": "?!…",
    "10000-chars": ("Did heavy rain flood the valley villages? " * 240)[:10_000],
    "chinese": "谁举行了关于全体会议的新闻发布会？",
    "arabic-rtl": "\u202eمن عقد المؤتمر الصحفي؟",
    "zero-width": "heavy\u200brain\u200d in the\ufeff valley",
    "html-like": '<b>rain</b> & <a href="http://evil.test">valley</a> &amp; </blockquote>',
}


@pytest.mark.parametrize("question", ODD_QUESTIONS.values(), ids=ODD_QUESTIONS.keys())
async def test_odd_question_gets_one_sensible_reply(bot: Bot, question: str) -> None:
    """Empty, blank, emoji-only, 10,000-character, Chinese, RTL or HTML-like questions each get
    one reply that is an answer, "not found" or "ask in words", never an error; nothing in the
    question becomes formatting, a link or a button."""
    await bot.ask(ALICE, question)
    [reply] = bot.server.messages(ALICE)
    assert _is_sensible(reply), reply.text[:200]


async def test_hostile_article_cannot_inject_formatting_links_or_buttons(
    bot: Bot, data_dir: Path, tmp_path: Path
) -> None:
    """An article whose title and text are HTML and entities, with a 300-character title and a
    10,000-character paragraph, is quoted literally in the answer, "Whole article" and /start,
    with only our own formatting and buttons."""
    hostile = '<a href="tg://user?id=1">me</a> <b>&amp;</b> &lt;i&gt; </blockquote><tg-spoiler>'
    title = f"Harbour crane strike {hostile} " + "union leader harbour strike " * 8
    (data_dir / "hostile.txt").write_text(
        f" date 2025-01-01 {title}\n\nThe harbour crane strike ended on Friday, said {hostile} "
        f"the union leader of the dock workers. {'Workers cheered loudly. ' * 400}\n"
    )
    build_index(read_articles(data_dir).articles, bot.handlers.service.encoder, tmp_path / "index")
    await bot.ask(ALICE, "harbour crane strike union leader")
    reply = bot.server.messages(ALICE)[-1]
    assert reply.text.startswith("1. Harbour crane strike <a href=")
    pressed = bot.server.press_button(ALICE, reply.message_id, reply.callback_data[0])
    await handled(bot.application).wait(pressed)  # the whole article has been sent
    await bot.ask(ALICE, "/start")
    for message in bot.server.messages(ALICE):
        assert {e["type"] for e in message.entities} <= OWN_ENTITIES, message.entities
        assert all("url" not in b for b in message.buttons)
    article = "\n".join(m.text for m in bot.server.messages(ALICE)[1:-1])
    assert f"said {hostile} the union leader" in article
    assert article.count("Workers cheered loudly.") == 400


async def test_start_stays_within_the_limit_when_titles_are_giant(
    bot: Bot, data_dir: Path, tmp_path: Path
) -> None:
    """/start quotes example questions made from article titles; 3,000-character titles are
    shortened so the introduction is still one valid message."""
    for n in range(3):
        title = f"Giant title {n} " + " ".join(f"word{n}x{i}" for i in range(400))
        (data_dir / f"giant{n}.txt").write_text(f" date 2025-0{n + 1}-01 {title}\n\nShort body.\n")
    build_index(read_articles(data_dir).articles, bot.handlers.service.encoder, tmp_path / "index")
    bot.handlers.service.reload_if_changed()  # as SIGHUP does; /start itself does not reload
    reply = await bot.ask(ALICE, "/start")
    assert reply.startswith("I answer questions about 6 news articles")
    assert reply.count("Giant title") == 3 and "\u2026" in reply


# -- access and limits -------------------------------------------------------------------------


class _Refusals(logging.Handler):
    """Counts the chat gate's refusals, one log line each, and wakes whoever waits for them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Refused an update"):
            self.count += 1
            self._changed.set()

    async def wait(self, count: int) -> None:
        """Wait until the gate has refused `count` updates."""
        async with asyncio.timeout(10):
            while self.count < count:
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def refusals() -> Iterator[_Refusals]:
    """The chat gate's refusals, counted from its log at INFO."""
    counter = _Refusals()
    with logging_into(counter, logging.INFO, "bot.handlers"):
        yield counter


@pytest.mark.parametrize("bot", [{"allowed": {ALICE, GROUP}}], indirect=True)
async def test_unlisted_group_gets_nothing_and_its_buttons_a_refusal(
    bot: Bot, refusals: _Refusals
) -> None:
    """Once a group leaves the list, mentions and /ask there get no reply (no noise in the
    group) and a button press there only a short refusal."""
    mention = f"{bot.server.bot_mention} heavy rain in the valley?"
    assert (await bot.ask(GROUP, mention, chat_type="group")).startswith(ANSWER_START)
    answer = bot.server.messages(GROUP)[0]
    bot.handlers.allowed_chats = frozenset({ALICE})
    bot.server.user_message(GROUP, mention, chat_type="group")
    bot.server.user_message(GROUP, "/ask who won the cup", chat_type="group")
    bot.server.press_button(GROUP, answer.message_id, answer.callback_data[0], chat_type="group")
    await bot.server.wait_for(lambda: bool(bot.server.callback_answers))
    await refusals.wait(3)  # the chat gate is done with all three
    assert bot.server.callback_answers[-1].get("text") in _in_any_language("not_allowed")
    assert len(bot.server.messages(GROUP)) == 1
    assert (await bot.ask(ALICE, QUESTION)).startswith(ANSWER_START)


@pytest.mark.parametrize("bot", [{"limit": 2}], indirect=True)
async def test_rate_limit_follows_the_user_across_chats_and_resets(bot: Bot) -> None:
    """The per-user limit counts a user's questions in every chat, not other users', and lifts
    once the minute has passed."""
    group = {"chat_type": "group", "user_id": ALICE}
    ask_in_group = f"{bot.server.bot_mention} who won the cup final"
    assert (await bot.ask(ALICE, QUESTION)).startswith(ANSWER_START)
    assert (await bot.ask(GROUP, ask_in_group, **group)).startswith("1. ")
    refused = await bot.ask(GROUP, ask_in_group, **group)
    assert refused in {say("too_many", lang, seconds=60) for lang in MESSAGES["too_many"]}
    assert (await bot.ask(GROUP, ask_in_group, chat_type="group", user_id=BOB)).startswith("1. ")
    bot.clock.now += 61
    assert (await bot.ask(ALICE, QUESTION)).startswith(ANSWER_START)


async def test_token_is_absent_from_debug_logs_and_tracebacks_of_a_faulty_run(
    data_dir: Path, tmp_path: Path
) -> None:
    """`newsqa bot` at DEBUG, through polling faults, a retried send and a refused one (a logged
    traceback and an apology), never prints the token, and stops cleanly on SIGTERM."""
    build_index(read_articles(data_dir).articles, FakeEncoder("no-such-model"), tmp_path / "index")
    async with TelegramServer() as server:
        env = {
            **os.environ,
            "TELEGRAM_BOT_TOKEN": server.token,
            "TELEGRAM_API_URL": server.base_url,
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "--log-level", "DEBUG", "bot", "--model", "no-such-model",
            "--backend", "torch",  # the fake model's index: nothing is ever encoded
            "--index", str(tmp_path / "index"),
            env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            await server.wait_for(lambda: bool(server.commands), timeout=60)
            server.fail_next("getUpdates", status=500)
            server.drop_next("getUpdates")
            server.fail_next("getUpdates", status=429, retry_after=1)
            server.user_message(ALICE, "/about")
            server.fail_next("sendMessage", status=502)
            [about] = await server.wait_for_messages(ALICE, 1, timeout=20)
            server.fail_next("sendMessage", status=400, description="Bad Request: chat not found")
            server.user_message(ALICE, "/start")  # refused: a logged traceback, then an apology
            apology = (await server.wait_for_messages(ALICE, 2, timeout=20))[1]
        finally:
            process.send_signal(signal.SIGTERM)
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    log = (stdout + stderr).decode()
    assert process.returncode == 0, log[-3000:]
    assert "Model: no-such-model" in about.text
    assert apology.text in _in_any_language("failed")
    assert "Traceback" in log and "getUpdates" in log  # DEBUG and a traceback really happened
    assert server.token not in log
    assert server.token.split(":")[1] not in log
