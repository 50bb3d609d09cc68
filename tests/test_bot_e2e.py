"""The bot end to end: the real PTB Application over HTTP against a local Bot API server."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from bot.logs import redact
from bot.memory import ExpiringStore, RateLimiter
from bot.messages import say
from bot.webhook import Webhook, listen
from embeddings.articles import read_articles
from embeddings.encoders.base import Vectors
from embeddings.index.build import build_index
from embeddings.search.reranker import Reranker
from testbed.articles import write_article
from testbed.fake_encoder import FakeEncoder
from testbed.telegram_server import TelegramServer
from tests.bots import Bot, Clock, free_port, start_bot, stop_bot, write_news

ALICE, BOB = 1001, 1002
GROUP = -100500


class SlowEncoder(FakeEncoder):
    """Takes a second over questions containing "slowly", to show questions run concurrently;
    `started` is set when it begins one."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()

    def encode_queries(self, texts: Sequence[str]) -> Vectors:
        if any("slowly" in text for text in texts):
            self.started.set()
            time.sleep(1.0)  # the injected fault: a question that takes a second to encode
        return super().encode_queries(texts)


@pytest.fixture
async def bot(data_dir: Path, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Bot]:
    """A polling bot over the seed article plus two short ones, with a hand-moved clock (with
    "database", its index is in PostgreSQL)."""
    write_news(data_dir)
    options = getattr(request, "param", {})
    store = request.getfixturevalue("database_url") if options.get("database") else None
    clock = Clock()
    async with TelegramServer() as server:
        handlers, application = await start_bot(
            server, data_dir, tmp_path / "index", options.get("encoder", FakeEncoder()),
            reranker=Reranker() if options.get("reranker") else None, store=store,
            allowed_chats=options.get("allowed", frozenset()),
            limiter=RateLimiter(options.get("limit", 0), 60, clock),
            pages=ExpiringStore(capacity=100, ttl=600, clock=clock),
        )  # fmt: skip
        yield Bot(server, handlers, application, data_dir, tmp_path / "index", clock)
        await stop_bot(application)


BOTH_STORES = pytest.mark.parametrize(
    "bot", [{}, {"database": True}], ids=["folder", "database"], indirect=True
)


@BOTH_STORES
async def test_private_question_quotes_the_right_article(bot: Bot) -> None:
    """A question is answered with the matching article's title, date and bold sentence."""
    reply = await bot.ask(ALICE, "How far did the river rise overnight?")
    assert reply.text.startswith("1. Heavy rain floods the valley\n2 May 2024\n")
    assert (
        reply.entities_of("bold")[1]
        == "The mayor said the river rose two metres overnight and that rescue teams evacuated four hundred people."
    )
    assert "rescue teams" in reply.entities_of("expandable_blockquote")[0]
    assert (ALICE, "typing") in bot.server.chat_actions
    assert reply.parse_mode == "HTML"


@pytest.mark.parametrize("bot", [{"reranker": True}], indirect=True)
async def test_with_the_reranker_the_answering_paragraph_and_sentence_come_first(bot: Bot) -> None:
    """With the packaged reranker, the paragraph holding the answer is quoted first, with the
    sentence that gives it in bold, through the real Telegram stack."""
    reply = await bot.ask(ALICE, "How many people did rescue teams get out of the valley?")
    assert reply.text.startswith("1. Heavy rain floods the valley\n2 May 2024\nThe mayor said")
    assert "evacuated four hundred people" in reply.entities_of("bold")[1]


async def test_one_passage_per_article_until_articles_run_out(bot: Bot) -> None:
    """The first page quotes three different articles before any second passage of one."""
    reply = await bot.ask(ALICE, "rain river valley football cup party session")
    titles = re.findall(r"^\d\. (.+)$", reply.text, flags=re.MULTILINE)
    assert len(titles) == len(set(titles)) == 3


@BOTH_STORES
async def test_start_and_help_describe_the_articles_with_examples(bot: Bot) -> None:
    """/start names the article count, date range and three example questions; menu is set."""
    reply = await bot.ask(ALICE, "/start")
    assert "3 news articles (9 July 2023 to 10 June 2024)" in reply.text
    assert len(re.findall(r"^• ", reply.text, flags=re.MULTILINE)) == 3
    assert [c["command"] for c in bot.server.commands] == ["start", "help", "ask", "about"]
    assert (await bot.ask(ALICE, "/help")).text == reply.text
    about = await bot.ask(ALICE, "/about")
    assert "Articles: 3\nPassages: 10\nModel: fake-encoder" in about.text


@pytest.mark.parametrize(
    ("language", "introduction", "about"),
    [
        ("ru", "по новостным статьям (статей: 3, с 9 июля 2023 по 10 июня 2024)",
         "Статей: 3\nФрагментов: 10\nМодель: fake-encoder\nИндекс построен: "),
        ("zh", "我根据3 篇新闻文章（2023年7月9日至2024年6月10日）回答问题",
         "文章： 3\n段落： 10\n模型： fake-encoder\n索引构建于： "),
    ],
)  # fmt: skip
async def test_start_help_and_about_speak_the_users_language(
    bot: Bot, language: str, introduction: str, about: str
) -> None:
    """/start, /help and /about follow the language Telegram reports for the user, with the
    dates written as that language writes them and the example questions as they are."""
    replies = []
    for command in ("/start", "/help", "/about"):
        bot.server.user_message(ALICE, command, language_code=language)
        replies.append((await bot.server.wait_for_messages(ALICE, len(replies) + 1))[-1])
    start, help_, about_reply = replies
    assert introduction in start.text and say("in_groups", language) in start.text
    assert len(re.findall(r"^• ", start.text, flags=re.MULTILINE)) == 3
    assert help_.text == start.text
    assert about_reply.text.startswith(about)
    assert start.entities_of("bold")[0] == "3" and about_reply.parse_mode == "HTML"


@BOTH_STORES
async def test_more_pages_in_place_and_back(bot: Bot) -> None:
    """ "More" edits the answer to the next passages; "Back" returns to the first."""
    reply = await bot.ask(ALICE, "party building session rain cup")
    more = next(b["callback_data"] for b in reply.buttons if b["text"] == "More »")
    bot.server.press_button(ALICE, reply.message_id, more)
    await bot.server.wait_for(lambda: bot.server.messages(ALICE)[-1].text.startswith("4. "))
    edited = bot.server.messages(ALICE)[-1]
    assert edited.message_id == reply.message_id
    back = next(b["callback_data"] for b in edited.buttons if b["text"] == "« Back")
    bot.server.press_button(ALICE, reply.message_id, back)
    await bot.server.wait_for(lambda: bot.server.messages(ALICE)[-1].text.startswith("1. "))


@BOTH_STORES
async def test_whole_article_arrives_in_full(bot: Bot) -> None:
    """ "Whole article" sends the article's title, date and every paragraph."""
    reply = await bot.ask(ALICE, "Who held the press conference about the plenary session?")
    first_article = next(b["callback_data"] for b in reply.buttons if b["text"] == "Article 1")
    bot.server.press_button(ALICE, reply.message_id, first_article)
    [article] = (await bot.server.wait_for_messages(ALICE, 2))[1:]
    assert article.text.startswith("Chongqing Holds Third Plenary Session")
    assert "Jiang Hui, member of the Standing Committee" in article.text
    assert article.text.endswith("in the new era and new journey.")
    assert "Share this" not in article.text


async def test_expired_button_answers_with_a_notice(bot: Bot) -> None:
    """A button whose answer has expired gets a short callback notice, not an error."""
    reply = await bot.ask(ALICE, "heavy rain")
    bot.clock.now += 601
    bot.server.press_button(ALICE, reply.message_id, reply.callback_data[0])
    await bot.server.wait_for(lambda: bool(bot.server.callback_answers))
    assert bot.server.callback_answers[-1].get("text") == say("expired")
    assert len(bot.server.messages(ALICE)) == 1


async def test_group_chatter_is_ignored_but_mentions_and_ask_are_answered(bot: Bot) -> None:
    """In a group the bot answers only when mentioned, replied to, or asked with /ask."""
    bot.server.user_message(GROUP, "heavy rain in the valley", chat_type="group")
    bot.server.user_sticker(GROUP, chat_type="group")
    mention = await bot.ask(
        GROUP, f"{bot.server.bot_mention} heavy rain in the valley?", chat_type="group"
    )
    assert mention.text.startswith("1. Heavy rain floods the valley")
    assert len(bot.server.messages(GROUP)) == 1  # the plain message and sticker got nothing
    asked = await bot.ask(GROUP, "/ask who won the cup final", chat_type="group")
    assert asked.text.startswith("1. Local team wins the cup")
    replied = await bot.ask(
        GROUP,
        "what about the penalty shootout at the cup final?",
        chat_type="group",
        reply_to_message_id=asked.message_id,
    )
    assert replied.text.startswith("1. Local team wins the cup")


async def test_sticker_gets_one_line_and_edits_are_ignored(bot: Bot) -> None:
    """Non-text messages get one explaining line; edited messages get nothing."""
    bot.server.user_sticker(ALICE)
    [reply] = await bot.server.wait_for_messages(ALICE, 1)
    assert reply.text == say("not_text")
    question = bot.server.user_message(ALICE, "heavy rain")
    await bot.server.wait_for_messages(ALICE, 2)
    edit = bot.server.user_edits(ALICE, question["message"]["message_id"], "who won the cup")
    await bot.handled.wait(edit)
    assert len(bot.server.messages(ALICE)) == 2


_MESSAGE = {"message_id": 1, "chat": {"id": ALICE, "type": "private"}, "text": "hi"}
ANN = {"id": ALICE, "is_bot": False, "first_name": "Ann"}


@pytest.mark.parametrize(
    "unreadable",
    [
        {"message": _MESSAGE},  # no date, which every message has
        {"message": {**_MESSAGE, "date": 1, "chat": f"{ALICE}"}},  # a chat as a newer API might
        {"message": {**_MESSAGE, "date": "yesterday"}},
    ],
    ids=["missing-field", "new-shape", "wrong-type"],
)
async def test_an_update_ptb_cannot_read_is_skipped_and_the_next_is_answered(
    bot: Bot, caplog: pytest.LogCaptureFixture, unreadable: dict[str, object]
) -> None:
    """An update python-telegram-bot cannot read costs one log line; the updater moves past
    it instead of fetching it again forever, and the question after it is answered."""
    skipped = bot.server.raw_update(unreadable)
    reply = await bot.ask(ALICE, "How far did the river rise overnight?")
    assert reply.text.startswith("1. Heavy rain floods the valley")
    await bot.server.wait_for(lambda: not bot.server.pending_updates)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and lines[0].startswith(f"Skipped update {skipped['update_id']}, ")


async def test_nothing_relevant_says_so(bot: Bot) -> None:
    """A question matching nothing gets one plain sentence instead of unrelated quotes."""
    reply = await bot.ask(ALICE, "zyxxy quantum marmalade?")
    assert reply.text == say("not_found")


async def test_bot_sentences_follow_the_question_language(bot: Bot) -> None:
    """A Russian question that finds nothing is told so in Russian; other lines follow the user."""
    reply = await bot.ask(ALICE, "Какая погода будет завтра в Москве?")
    assert reply.text == say("not_found", "ru")
    bot.server.user_sticker(BOB)
    [line] = await bot.server.wait_for_messages(BOB, 1)
    assert line.text == say("not_text", "en")


async def test_empty_question_gets_an_example(bot: Bot) -> None:
    """`/ask` with nothing after it asks for words and shows an example question."""
    reply = await bot.ask(ALICE, "/ask")
    assert reply.text.startswith("Please ask a question in words, for example: What do")


@pytest.mark.parametrize("bot", [{"limit": 2}], indirect=True)
async def test_rate_limit_answers_with_the_wait(bot: Bot) -> None:
    """Past the per-user limit, the bot says how long to wait instead of queueing."""
    await bot.ask(ALICE, "heavy rain")
    await bot.ask(ALICE, "the cup")
    refused = await bot.ask(ALICE, "the mayor")
    assert refused.text == "Too many questions; please try again in 60 s."
    assert (await bot.ask(BOB, "the mayor")).text.startswith("1. ")


@pytest.mark.parametrize("bot", [{"allowed": frozenset({ALICE, BOB})}], indirect=True)
async def test_disallowed_chat_and_its_buttons_are_refused(bot: Bot) -> None:
    """Chats outside the allowed list get a refusal, for messages and button presses alike."""
    assert (await bot.ask(2002, "heavy rain")).text == say("not_allowed")
    reply = await bot.ask(BOB, "heavy rain")
    bot.handlers.allowed_chats = frozenset({ALICE})
    bot.server.press_button(BOB, reply.message_id, reply.callback_data[0])
    await bot.server.wait_for(lambda: bool(bot.server.callback_answers))
    assert bot.server.callback_answers[-1].get("text") == say("not_allowed")
    assert len(bot.server.messages(BOB)) == 1


@pytest.mark.parametrize("bot", [{"encoder": SlowEncoder()}], indirect=True)
async def test_a_slow_question_does_not_stall_another_user(bot: Bot) -> None:
    """Two users ask at once; the quick question is answered while the slow one is searched."""
    bot.server.user_message(ALICE, "slowly: heavy rain in the valley")
    slow = bot.handlers.service.encoder
    assert isinstance(slow, SlowEncoder)
    assert await asyncio.to_thread(slow.started.wait, 10)
    bot.server.user_message(BOB, "who won the cup")
    await bot.server.wait_for_messages(ALICE, 1, timeout=10)
    await bot.server.wait_for_messages(BOB, 1, timeout=10)
    alice, bob = bot.server.messages(ALICE)[0], bot.server.messages(BOB)[0]
    assert alice.text.startswith("1. Heavy rain") and bob.text.startswith("1. Local team")
    assert bob.date <= alice.date and bob.message_id <= alice.message_id + 1
    assert bot.server.calls.index(("sendMessage", bob.params)) < bot.server.calls.index(
        ("sendMessage", alice.params)
    )


async def test_over_long_answer_is_trimmed_to_fit(bot: Bot) -> None:
    """Three very long matching passages are trimmed at sentences so Telegram accepts the reply."""
    for name in ("a", "b", "c"):
        sentences = [  # worded apart, so they are not taken for copies of one story
            f"Sentence {i} of {name} talks about the harbour crane strike at considerable length."
            for i in range(19)
        ]
        write_article(bot.data_dir, f"{name}.txt", f"Harbour {name}", " ".join(sentences))
    build_index(read_articles(bot.data_dir).articles, bot.handlers.service.encoder, bot.index_dir)
    reply = await bot.ask(ALICE, "harbour crane strike")
    assert len(reply.text.encode("utf-16-le")) // 2 <= 4096
    assert reply.text.count("Harbour") == 3
    assert "\u2026" in reply.text


async def test_rebuilt_index_is_served_without_restart(bot: Bot) -> None:
    """An article added and indexed while the bot runs is found by the next question."""
    assert "Volcano" not in (await bot.ask(ALICE, "volcano eruption ash cloud")).text
    write_article(
        bot.data_dir,
        "volcano.txt",
        "Volcano erupts",
        "The volcano eruption sent an ash cloud over the island and flights were cancelled.",
    )
    build_index(read_articles(bot.data_dir).articles, bot.handlers.service.encoder, bot.index_dir)
    assert (await bot.ask(ALICE, "volcano eruption ash cloud")).text.startswith("1. Volcano erupts")


async def test_failure_is_reported_and_the_bot_keeps_running(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    """When sending fails, the user gets one sentence, the log the traceback, and polling goes on."""
    bot.server.fail_next("sendMessage", status=400, description="Bad Request: chat not found")
    reply = await bot.ask(ALICE, "heavy rain")
    assert reply.text == "Sorry, something went wrong while answering. Please try again."
    assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)
    assert (await bot.ask(ALICE, "heavy rain")).text.startswith("1. Heavy rain")


async def test_token_never_reaches_the_logs(bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    """With the CLI's redaction, even DEBUG logs of a whole exchange never contain the token."""
    redact(bot.server.token)
    caplog.set_level(logging.DEBUG)
    await bot.ask(ALICE, "heavy rain")
    bot.server.fail_next("sendMessage", status=400, description="Bad Request: boom")
    await bot.ask(ALICE, "the cup")
    assert "/bot" in caplog.text or caplog.text  # something was logged
    assert bot.server.token not in caplog.text


async def test_webhook_mode_checks_the_secret_token_and_skips_what_ptb_cannot_read(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In webhook mode, updates without the right secret are refused (403) and a body that is
    no update gets a 400; an update PTB cannot read is taken (200, so Telegram does not send it
    again before the rest) with one log line; the right one is answered."""
    write_news(data_dir)
    async with TelegramServer() as server:
        _, application = await start_bot(server, data_dir, tmp_path / "index", FakeEncoder())
        assert application.updater is not None
        await application.updater.stop()
        port = free_port()
        url = f"http://127.0.0.1:{port}/telegram"
        await application.bot.set_webhook(url, secret_token="s3cret-token")
        receiver = listen(application, Webhook(url, "s3cret-token", "127.0.0.1", port))
        update = {"update_id": 1, "message": {**_MESSAGE, "date": int(time.time())}}
        update["message"].update(text="heavy rain", **{"from": ANN})
        assert await server.post_to_webhook(update, None) == 403
        assert await server.post_to_webhook(update, "wrong") == 403
        assert await server.post_to_webhook({"not": "an update"}, "s3cret-token") == 400
        assert (
            await server.post_to_webhook({"update_id": 2, "message": _MESSAGE}, "s3cret-token")
            == 200
        )
        assert await server.post_to_webhook(update, "s3cret-token") == 200
        [reply] = await server.wait_for_messages(ALICE, 1)
        assert reply.text.startswith("1. Heavy rain floods the valley")
        receiver.stop()
        await stop_bot(application)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and lines[0].startswith("Skipped update 2, ")


@pytest.mark.model
async def test_real_model_answers_the_seed_question_over_telegram(
    data_dir: Path, tmp_path: Path
) -> None:
    """With the packaged model, the press-conference question quotes Jiang Hui's paragraph first."""
    from embeddings.encoders.torch_runtime import SentenceTransformerEncoder

    async with TelegramServer() as server:
        encoder = SentenceTransformerEncoder()
        _, application = await start_bot(server, data_dir, tmp_path / "index", encoder)  # type: ignore[arg-type]
        server.user_message(ALICE, "Who held the press conference about the plenary session?")
        [reply] = await server.wait_for_messages(ALICE, 1, timeout=60)
        await stop_bot(application)
    assert reply.text.startswith("1. Chongqing Holds Third Plenary Session")
    assert reply.entities_of("expandable_blockquote")[0].startswith(
        "Jiang Hui, member of the Standing Committee"
    )
    assert "held a press conference on July 8" in reply.entities_of("bold")[1]
    print(reply.raw_text)  # the exact HTML sent, shown with pytest -s
