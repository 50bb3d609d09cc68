"""The Telegram conversation: one small async handler per command, message and button."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

from telegram import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    MessageEntity,
    Update,
    User,
)
from telegram.constants import ChatAction, ChatType, MessageLimit, ParseMode
from telegram.error import TelegramError, TimedOut
from telegram.ext import ApplicationHandlerStop, ContextTypes

from bot.admin import Admin
from bot.memory import QUESTIONS_PER_WINDOW, ExpiringStore, Keeper, Limiter, RateLimiter
from bot.messages import language_of, say
from bot.metrics import Metrics, chat_hash
from bot.pages import DOCUMENT_SUFFIXES
from bot.replies import about_message, answers_message, article_messages, introduction_message
from bot.service import QAService, Ranking
from embeddings import (
    ENGLISH,
    EmptyQuestionError,
    NewsqaError,
    detect_language,
)
from embeddings.collection import Addition

log = logging.getLogger(__name__)

PAGE_SIZE = 3
# The largest file the Bot API lets a bot download.
MAX_DOCUMENT_BYTES = 20 * 1024 * 1024


@dataclass
class Handlers:
    """The bot's handlers and the state they share: the service, answer pages, rate limits."""

    service: QAService
    allowed_chats: frozenset[int] = frozenset()
    limiter: Limiter = field(default_factory=lambda: RateLimiter(QUESTIONS_PER_WINDOW))
    pages: Keeper[Ranking] = field(default_factory=ExpiringStore)
    admin: Admin | None = None
    metrics: Metrics = field(default_factory=Metrics)

    async def gatekeeper(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Stop updates from chats outside the allowed list, with a short refusal."""
        chat = update.effective_chat
        if not self.allowed_chats or chat is None or chat.id in self.allowed_chats:
            return
        log.info("Refused an update from chat %s", chat_hash(chat.id))
        refusal = say("not_allowed", _language(update.effective_user))
        if update.callback_query:
            await update.callback_query.answer(refusal)
        elif update.message and chat.type == ChatType.PRIVATE:
            await update.message.reply_text(refusal)
        raise ApplicationHandlerStop

    async def start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/start and /help: what the bot knows, and three example questions."""
        stats = self.service.stats()
        await self._reply(update, introduction_message(stats, _language(update.effective_user)))

    async def about(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Describe the index: articles, passages, model, build time."""
        stats = self.service.stats()
        await self._reply(update, about_message(stats, _language(update.effective_user)))

    async def ask(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """`/ask <question>`: the way to ask in a group without mentioning the bot."""
        question = " ".join(context.args or [])
        if update.message:
            await self._answer(update.message, question, context)

    async def question(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A text message: a question in a private chat, or in a group when addressed to us."""
        message = update.message
        if message is None or message.text is None:
            return
        if message.chat.type != ChatType.PRIVATE and not _addressed(message, context.bot.username):
            return
        question = message.text.replace(f"@{context.bot.username}", " ").strip()
        await self._answer(message, question, context)

    async def not_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Stickers, photos, voice...: say in one line what the bot can do."""
        message = update.message
        if message and (
            message.chat.type == ChatType.PRIVATE or _addressed(message, context.bot.username)
        ):
            await message.reply_text(say("not_text", _language(update.effective_user)))

    async def add(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """`/add <url>`: an admin adds the article at that address."""
        message = update.message
        if message is None or (admin := await self._admin_of(message)) is None:
            return
        url = " ".join(context.args or []).strip()
        if not url:
            await message.reply_text(say("add_usage", _language(message.from_user)))
            return
        await self._add(message, admin, admin.add_url(url))

    async def document(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A file: an admin's article to add; anyone else's file is never downloaded."""
        message = update.message
        if message is None or message.document is None:
            return
        if message.chat.type != ChatType.PRIVATE and not _addressed(message, context.bot.username):
            return
        if (admin := await self._admin_of(message)) is None:
            return
        name = message.document.file_name or ""
        if Path(name).suffix.lower() not in DOCUMENT_SUFFIXES:
            await message.reply_text(say("add_usage", _language(message.from_user)))
            return
        if (message.document.file_size or 0) > MAX_DOCUMENT_BYTES:
            too_big = f"{name} is larger than {MAX_DOCUMENT_BYTES // 2**20} MB"
            await message.reply_text(say("not_added", _language(message.from_user), reason=too_big))
            return
        file = await message.document.get_file()
        data = bytes(await file.download_as_bytearray())
        await self._add(message, admin, admin.add_document(name, data))

    async def _admin_of(self, message: Message) -> Admin | None:
        """The means to add articles when the sender is an admin; others get a polite no."""
        user = message.from_user
        if self.admin is not None and self.admin.allows(user.id if user else None):
            return self.admin
        log.info("Refused to add an article for user %s", user.id if user else None)
        await message.reply_text(say("admins_only", _language(user)))
        return None

    async def _add(self, message: Message, admin: Admin, adding: Awaitable[list[Addition]]) -> None:
        """Store, index, then reply: each article's title and passages, or what went wrong."""
        language = _language(message.from_user)
        try:
            additions = await adding
        except NewsqaError as error:
            await message.reply_text(say("not_added", language, reason=error))
            return
        lines = [say("not_added", language, reason=a) for a in additions if a.article is None]
        added = [a for a in additions if a.article is not None]
        if added:
            try:
                searchable = await admin.make_searchable(self.service, added)
            except NewsqaError as error:  # the articles are stored: the next build takes them
                log.error("Articles were stored but not indexed: %s", error)
                lines.append(say("not_indexed", language, reason=error))
            else:
                lines += [say("added", language, title=t, passages=n) for t, n in searchable]
        await message.reply_text("\n".join(lines)[: MessageLimit.MAX_TEXT_LENGTH])

    async def page(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The "More" / "Back" buttons: show another page of the same answer in place."""
        self.metrics.buttons.labels("page").inc()
        if pressed := await self._pressed(update):
            message, ranking, key, number = pressed
            text, keyboard = await self._page(ranking, key, number)
            await message.edit_text(text, parse_mode=ParseMode.HTML, reply_markup=keyboard)

    async def article(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The "Whole article" button: send the article, in as many messages as it needs."""
        self.metrics.buttons.labels("article").inc()
        if pressed := await self._pressed(update):
            message, ranking, _, position = pressed
            passages = self.service.article(ranking.hits[position].passage)
            for text in article_messages(passages):
                await message.reply_text(text, parse_mode=ParseMode.HTML)

    async def _pressed(self, update: Update) -> tuple[Message, Ranking, str, int] | None:
        """A button press: its message, answer, key and number; None once the answer expired."""
        query = update.callback_query
        assert query is not None and query.data is not None
        _, key, number = query.data.split(":")
        ranking = await self.pages.get(key)
        if ranking is None or not isinstance(query.message, Message):
            await query.answer(say("expired", _language(update.effective_user)))
            return None
        await query.answer()
        return query.message, ranking, key, int(number)

    async def error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Log the traceback and tell the user one short sentence; the bot keeps running."""
        log.error("Error while handling an update", exc_info=context.error)
        self.metrics.errors.labels(type(context.error).__name__).inc()
        if isinstance(context.error, TimedOut):
            return  # Telegram may have delivered the message after all; no apology for it
        if isinstance(update, Update) and update.effective_message:
            try:
                await update.effective_message.reply_text(
                    say("failed", _language(update.effective_user))
                )
            except Exception:  # the API may be what failed; the log already has the story
                log.warning("Could not tell the user about the error", exc_info=True)

    async def _answer(
        self, message: Message, question: str, context: ContextTypes.DEFAULT_TYPE
    ) -> None:
        """Rate-limit, search off the event loop, and reply with the first page of passages."""
        started = time.perf_counter()
        log.debug("Question: %r", question)
        user_id = message.from_user.id if message.from_user else message.chat.id
        language = detect_language(question) if question.strip() else _language(message.from_user)
        wait = await self.limiter.retry_after(user_id)
        if wait > 0:
            await message.reply_text(say("too_many", language, seconds=max(1, round(wait))))
            self.metrics.question("rate_limited", started, message.chat.id)
            return
        try:
            await context.bot.send_chat_action(message.chat.id, ChatAction.TYPING)
        except TelegramError as error:  # "typing..." is a courtesy; the answer matters
            log.warning("Could not show the typing indicator: %s", error)
        try:
            ranking = await self.service.rank(question)
        except EmptyQuestionError:
            example = (self.service.stats().examples or ["What happened?"])[0]
            await message.reply_text(say("empty_question", language, example=example))
            self.metrics.question("declined", started, message.chat.id)
            return
        if not ranking.hits:
            await message.reply_text(say("not_found", language))
            self.metrics.question("declined", started, message.chat.id)
            return
        key = await self.pages.put(ranking)
        text, keyboard = await self._page(ranking, key, 0)
        await message.reply_text(text, parse_mode=ParseMode.HTML, reply_markup=keyboard)
        self.metrics.question("answered", started, message.chat.id)

    async def _page(
        self, ranking: Ranking, key: str, number: int
    ) -> tuple[str, InlineKeyboardMarkup]:
        """The HTML of page `number` of a ranking, and its buttons."""
        start = number * PAGE_SIZE
        answers = await self.service.answers(ranking, start, PAGE_SIZE)
        keyboard = _keyboard(key, number, start, len(answers), len(ranking.hits), ranking.language)
        return answers_message(answers, first_rank=start + 1), keyboard

    async def _reply(self, update: Update, text: str) -> None:
        if update.effective_message:
            await update.effective_message.reply_text(text, parse_mode=ParseMode.HTML)


def _keyboard(
    key: str, number: int, start: int, shown: int, total: int, language: str
) -> InlineKeyboardMarkup:
    """Paging buttons, and one "Whole article" button per passage shown."""
    articles = [
        InlineKeyboardButton(
            say("whole_article", language)
            if shown == 1
            else say("article_n", language, n=start + i + 1),
            callback_data=f"a:{key}:{start + i}",
        )
        for i in range(shown)
    ]
    paging = []
    if number > 0:
        paging.append(
            InlineKeyboardButton(say("back", language), callback_data=f"p:{key}:{number - 1}")
        )
    if start + shown < total:
        paging.append(
            InlineKeyboardButton(say("more", language), callback_data=f"p:{key}:{number + 1}")
        )
    return InlineKeyboardMarkup([row for row in (articles, paging) if row])


def _language(user: User | None) -> str:
    """The language Telegram reports for a user (English when unknown)."""
    return language_of(user.language_code) if user else ENGLISH


def _addressed(message: Message, username: str) -> bool:
    """True when a group message mentions the bot or replies to one of its messages."""
    mentions = message.parse_entities([MessageEntity.MENTION]) if message.text else {}
    if any(text.lower() == f"@{username}".lower() for text in mentions.values()):
        return True
    replied = message.reply_to_message
    return bool(replied and replied.from_user and replied.from_user.username == username)
