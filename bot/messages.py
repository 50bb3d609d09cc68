"""The bot's own sentences in English, Russian and Chinese; other languages get English."""

from __future__ import annotations

ENGLISH = "en"

MESSAGES: dict[str, dict[str, str]] = {
    "not_found": {
        "en": "I couldn't find that in the articles. Try rephrasing the question, "
        "or send /help for examples of what I can answer.",
        "ru": "Я не нашёл ответа в статьях. Попробуйте переформулировать вопрос "
        "или отправьте /help, чтобы увидеть примеры.",
        "zh": "我在文章中没有找到答案。请换一种说法提问，或发送 /help 查看示例。",
    },
    "empty_question": {
        "en": "Please ask a question in words, for example: {example}",
        "ru": "Пожалуйста, задайте вопрос словами, например: {example}",
        "zh": "请用文字提问，例如：{example}",
    },
    "not_text": {
        "en": "I can only read text: ask me a question about the news articles, or send /help.",
        "ru": "Я понимаю только текст: задайте вопрос о новостных статьях или отправьте /help.",
        "zh": "我只能读取文字：请就新闻文章提问，或发送 /help。",
    },
    "expired": {
        "en": "This answer has expired; please ask the question again.",
        "ru": "Этот ответ устарел; задайте вопрос ещё раз.",
        "zh": "这个回答已过期，请重新提问。",
    },
    "not_allowed": {
        "en": "Sorry, this bot is not available in this chat.",
        "ru": "Извините, этот бот недоступен в этом чате.",
        "zh": "抱歉，此聊天中无法使用本机器人。",
    },
    "failed": {
        "en": "Sorry, something went wrong while answering. Please try again.",
        "ru": "Извините, при ответе что-то пошло не так. Попробуйте ещё раз.",
        "zh": "抱歉，回答时出了点问题，请重试。",
    },
    "too_many": {
        "en": "Too many questions; please try again in {seconds} s.",
        "ru": "Слишком много вопросов; попробуйте снова через {seconds} с.",
        "zh": "提问太频繁，请在 {seconds} 秒后重试。",
    },
    "more": {"en": "More »", "ru": "Ещё »", "zh": "更多 »"},
    "back": {"en": "« Back", "ru": "« Назад", "zh": "« 返回"},
    "whole_article": {"en": "Whole article", "ru": "Вся статья", "zh": "全文"},
    "article_n": {"en": "Article {n}", "ru": "Статья {n}", "zh": "文章 {n}"},
}


def say(key: str, language: str = ENGLISH, **values: object) -> str:
    """The sentence `key` in `language` (English when there is no translation)."""
    texts = MESSAGES[key]
    return texts.get(language, texts[ENGLISH]).format(**values)


def language_of(code: str | None) -> str:
    """Our language for a Telegram `language_code` such as "ru" or "zh-hans"."""
    return (code or ENGLISH).split("-")[0].lower()
